"""evcmae-bench all: every benchmark's result in one JSON object on stdout, whatever they print."""

import json
import sys
import types

from evcmae.tools import bench


def test_all_collects_every_benchmark_into_one_json(monkeypatch, capsys):
    fake = types.ModuleType("fake_benchmarks")

    def make(name):
        def run():
            print(f"{name} chatter that must not reach stdout")  # as Lightning's banners do
            return {"ms": len(name)}

        return run

    names = ["voxelize", "backbone", "detector"]
    for name in names:
        setattr(fake, f"bench_{name}", make(name))
    monkeypatch.setitem(sys.modules, "fake_benchmarks", fake)
    monkeypatch.setattr(bench, "BENCHMARKS", {n: f"fake_benchmarks:bench_{n}" for n in names})

    assert bench.main(["all", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)  # stdout holds exactly one JSON document
    assert {k: result[k] for k in names} == {n: {"ms": len(n)} for n in names}
    assert result["machine"]["cpus"] >= 1
    assert "voxelize chatter" in err
