# dtypes and devices — CPU only here, as the tutorials write it.
# %% pick a device the usual way
import torch
device = "cuda" if torch.cuda.is_available() else "cpu"
print(f"Using {device} device")

# %% move tensors
x = torch.arange(6).reshape(2, 3)
x_dev = x.to(device)
x_f = x.to(torch.float32)
x_d = x.double()
x_h = x.half()
print(x_dev.device, x_f.dtype, x_d.dtype, x_h.dtype)

# %% type promotion
i = torch.tensor([1, 2, 3])
f = torch.tensor([0.5, 0.5, 0.5])
print((i + f).dtype, (i * 2).dtype, (i / 2).dtype, (i // 2).dtype)

# %% torch.device objects and .to with both
dev = torch.device("cpu")
y = torch.ones(2, 2, device=dev, dtype=torch.float64)
z = y.to(dev, torch.float32)
print(dev, y.dtype, z.dtype, z.device.type)

# %% bool and integer tensors
mask = x > 2
counts = mask.sum()
print(mask, counts.dtype)
u8 = torch.tensor([250, 5], dtype=torch.uint8)
print(u8 + 10)

# %% bfloat16 and complex
bf = torch.linspace(0, 1, 5, dtype=torch.bfloat16)
c = torch.complex(torch.tensor([1.0, 2.0]), torch.tensor([0.5, -0.5]))
print(bf, c.abs(), c.dtype)

# %% the default dtype set in a cell
torch.set_default_dtype(torch.float64)
w = torch.zeros(3)
print(w.dtype)

# %% the next cell sees the default
v = torch.tensor([1.5, 2.5])
print(v.dtype, torch.get_default_dtype())

# %% and back
torch.set_default_dtype(torch.float32)
print(torch.ones(1).dtype)
