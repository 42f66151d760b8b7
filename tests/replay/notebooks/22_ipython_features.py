# IPython features inside cells: magics, shell commands, the last expression.
# %% %time on an assignment
%time total = sum(range(10_000))
print(total)

# %% a shell command
!echo hello from the shell

# %% the last expression is shown
[1, 2, 3] + [4]

# %% a trailing semicolon hides it
x = 41
x + 1;

# %% exec and eval
exec("made_by_exec = 5 * 5")
print(eval("made_by_exec + 1"))

# %% f-strings, walrus and comprehension scopes
values = [3, 8, 1, 9]
if (n := len(values)) > 3:
    print(f"{n} values, max {max(values)}")
doubled = {v: v * 2 for v in values}
print(doubled)

# %% a multi-line string and formatting
report = """
name: {name}
score: {score:.2f}
""".format(name="run-1", score=0.98765)
print(report.strip())

# %% print to stderr and stdout
import sys
print("to stdout")
print("to stderr", file=sys.stderr)

# %% display of rich objects
from IPython.display import display, HTML
display(HTML("<b>bold</b>"))
display({"a": 1})
