# Plotting with matplotlib — figures made in remote cells.
# %% [local] the inline backend, as a notebook's first cell says
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np

# %% the same magic in a remote cell
%matplotlib inline

# %% a simple line plot
xs = np.linspace(0, 2 * np.pi, 50)
plt.plot(xs, np.sin(xs), label="sin")
plt.plot(xs, np.cos(xs), label="cos")
plt.legend()
plt.title("trig")
plt.show()

# %% the object-oriented interface, figure kept in a variable
fig, ax = plt.subplots(figsize=(4, 3))
line, = ax.plot([1, 2, 3], [4, 1, 9], "o-")
ax.set_xlabel("step")
ax.set_ylabel("value")
ax.set_title("kept")

# %% modify the kept figure in another cell
ax.set_title("renamed")
line.set_ydata([0, 0, 1])
print(ax.get_title(), list(line.get_ydata()))

# %% a histogram with seeded data
rng = np.random.default_rng(0)
samples = rng.normal(size=500)
counts, edges, patches = plt.hist(samples, bins=10)
print(counts.astype(int))

# %% subplots grid
fig2, axes = plt.subplots(1, 2)
axes[0].bar(["a", "b"], [3, 5])
axes[1].scatter([1, 2, 3], [3, 2, 1])
fig2.suptitle("grid")
print(len(fig2.axes))

# %% save to bytes and close
import io
png = io.BytesIO()
fig.savefig(png, format="png")
plt.close(fig)
print(png.getvalue()[:8])

# %% a loss curve from a list
losses = [1 / (i + 1) for i in range(20)]
plt.figure()
plt.plot(losses)
plt.yscale("log")
plt.close()
print(round(sum(losses), 4))
