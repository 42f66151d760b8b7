# Data wrangling without pandas or sklearn: csv, dicts, Counters, grouping.
# %% read a small csv from text
import csv
import io
raw = """city,month,temp,rain
Oslo,Jan,-4.3,49
Oslo,Jul,16.4,81
Lima,Jan,22.9,1
Lima,Jul,16.5,0
Pune,Jan,21.3,1
Pune,Jul,25.4,187
"""
rows = list(csv.DictReader(io.StringIO(raw)))
print(len(rows), rows[0])

# %% convert types in place
for r in rows:
    r["temp"] = float(r["temp"])
    r["rain"] = int(r["rain"])
print(rows[1])

# %% group by city
from collections import defaultdict
by_city = defaultdict(list)
for r in rows:
    by_city[r["city"]].append(r)
print({k: len(v) for k, v in by_city.items()})

# %% aggregates
summary = {city: {"mean_temp": round(sum(r["temp"] for r in rs) / len(rs), 2),
                  "total_rain": sum(r["rain"] for r in rs)}
           for city, rs in by_city.items()}
summary

# %% sort by a key
wettest = sorted(rows, key=lambda r: r["rain"], reverse=True)[:3]
print([(r["city"], r["month"]) for r in wettest])

# %% counters
from collections import Counter
words = "the quick brown fox jumps over the lazy dog the end".split()
freq = Counter(words)
print(freq.most_common(3))

# %% update the counter in place
freq.update(["fox", "fox"])
print(freq["fox"], sum(freq.values()))

# %% itertools groupby on sorted data
from itertools import groupby
months = sorted(rows, key=lambda r: r["month"])
per_month = {m: [r["city"] for r in g] for m, g in groupby(months, key=lambda r: r["month"])}
print(per_month)

# %% json round trip
import json
blob = json.dumps(summary, sort_keys=True)
back = json.loads(blob)
print(back == summary, len(blob))

# %% write a csv back out
out = io.StringIO()
writer = csv.DictWriter(out, fieldnames=["city", "month", "temp"], extrasaction="ignore")
writer.writeheader()
writer.writerows(rows)
print(out.getvalue().splitlines()[:3])
