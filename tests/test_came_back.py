"""The 'came back' line: what matters first, the noise counted, the same for 2 names and for 40."""

from __future__ import annotations

import math
import os
import time

import torch

from modal_magic.notebook.view.came_back import describe_returned


def test_two_names_and_an_import_read_as_value_then_count() -> None:
    returned = describe_returned({"y": torch.zeros(2, 3), "time": time, "i": 3})
    assert returned.text() == "y Tensor[2, 3] float32 cpu, i = 3; 1 module (time)"


def test_forty_names_put_tensors_and_models_first_and_count_the_rest() -> None:
    values: dict = {"os": os, "math": math, **{f"n{k}": k for k in range(20)}}
    values.update({f"w{k}": torch.zeros(k + 1) for k in range(10)})
    values.update(model=torch.nn.Linear(3, 4), losses=[0.5, 0.25], greet=lambda: None, name="x" * 40)
    assert len(values) == 36
    text = describe_returned(values).text()
    described, counted = text.split("; ")
    assert described.startswith("w0 Tensor[1] float32 cpu, w1 Tensor[2] float32 cpu")
    assert described.count(",") == 5  # six described one by one
    assert counted == ("and 30 more: 20 int, 4 Tensor, 2 modules (os, math), 1 Linear (model), "
                       "1 list (losses), 1 function (greet), 1 str (name)")


def test_a_model_says_its_parameters_and_a_long_scalar_only_its_type() -> None:
    text = describe_returned({"model": torch.nn.Linear(3, 4), "name": "x" * 40}).text()
    assert text == "model Linear (16 parameters), name str"
