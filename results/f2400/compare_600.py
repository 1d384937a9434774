"""The frozen protocol at seeds 0-3: the 2400-step teacher against the untrained encoder and the
600-step teacher (results/frozen_seeds), test AP under RVT's scoring, paired t-intervals, and each
run's best val AP. Run from the study clone: python compare_600.py OUTPUTS [SEEDS...], where OUTPUTS
holds f2400/ (this study's work_dir) and frozen/ (results/frozen_seeds' work_dir)."""
import json, statistics, sys
from evcmae.tools.study_report import t_quantile
base = sys.argv[1]
seeds = [int(s) for s in sys.argv[2:]] or [0, 1, 2, 3]
def test(path, key):
    return 100 * json.load(open(f"{path}/eval_test/metrics.json"))[key]
def best_val(path):
    import csv, glob
    f = glob.glob(f"{path}/csv/*/metrics.csv")[0]
    vals = [float(r["val/AP"]) for r in csv.DictReader(open(f)) if r.get("val/AP")]
    return 100 * max(vals)
runs = {"2400": f"{base}/f2400/finetune/frozen-pretrained-seed{{}}", "600": f"{base}/frozen/finetune/frozen-pretrained-seed{{}}", "untrained": f"{base}/frozen/finetune/frozen-untrained-seed{{}}"}
for key in ("AP", "AP_class_agnostic"):
    vals = {n: [test(p.format(s), key) for s in seeds] for n, p in runs.items()}
    print(key, {n: [round(v, 2) for v in vs] for n, vs in vals.items()})
    for ref in ("untrained", "600"):
        d = [a - b for a, b in zip(vals["2400"], vals[ref])]
        m, sd = statistics.mean(d), statistics.stdev(d)
        h = t_quantile(len(d) - 1) * sd / len(d) ** 0.5
        print(f"  2400 - {ref}: {[round(x, 2) for x in d]} -> {m:+.2f} ± {sd:.2f} [{m - h:+.2f}, {m + h:+.2f}], wins {sum(x > 0 for x in d)}/{len(d)}")
    d = [a - b for a, b in zip(vals["600"], vals["untrained"])]
    m, sd = statistics.mean(d), statistics.stdev(d)
    h = t_quantile(len(d) - 1) * sd / len(d) ** 0.5
    print(f"  600 - untrained (same seeds): {m:+.2f} [{m - h:+.2f}, {m + h:+.2f}]")
bv = {n: [best_val(p.format(s)) for s in seeds] for n, p in runs.items()}
print("best val AP", {n: [round(v, 2) for v in vs] for n, vs in bv.items()})
