"""Published figures the models were not fitted on: the figure as published, the prediction pinned to its value
(worked out here from the inputs, not by the model), the ratio, and whether it is a hit (within ±10%) or a miss."""

from __future__ import annotations

import pytest

from gdslab import coldstart as cs
from gdslab import kvcache, plots

GIB = 2**30
FP8_WEIGHTS = 487.23e9 + 7 * (126 * 2 * 16384 * 2 + 16384 * 2)

# key, published figure, its unit, source (a substring), prediction (from the inputs, by hand), hit
COLDSTART = [
    # 96 TiB × 1000 MB/s/TiB of disk = 96 GB/s binds before the client's 150 GB/s (AWS GDS post: ~94 GiB/s)
    ("fsx-96tib-throughput", 94.0, "GiB/s", "Accelerate LLM model loading", 96e9 / GIB, True),
    # a P5's own limits: 3,200 Gbit/s of EFA < 8 × 53 GB/s of PCIe (FSx user guide: 1,200 Gbps per client)
    ("p5-client-gds", 1200.0, "Gbit/s", "individual client", 3200.0, False),
]


@pytest.mark.parametrize("key,published,unit,source,predicted,hit", COLDSTART, ids=[r[0] for r in COLDSTART])
def test_coldstart_out_of_sample(key, published, unit, source, predicted, hit):
    row = {r.key: r for r in cs.out_of_sample()}[key]
    assert (row.published, row.unit) == (published, unit) and source in row.source
    assert row.predicted == pytest.approx(predicted, rel=1e-6)
    assert row.ratio == pytest.approx(predicted / published, rel=1e-6) and row.hit == hit
    assert len(row.why) > 80 and row.inputs
    table = cs.out_of_sample_table([row])
    assert ("hit" if hit else "miss") in table and f"{predicted / published:.2f}" in table


def test_the_calibrated_figure_is_not_counted_out_of_sample():
    # the GDS row reads at the post's own 94 GiB/s; the prediction above never uses that input
    assert {r.key for r in cs.out_of_sample()}.isdisjoint({s.key for s in cs.presets()})
    changed = cs.Inputs(fsx_measured_gibps=1.0)
    assert [r.predicted for r in cs.out_of_sample(changed)] == [r.predicted for r in cs.out_of_sample()]


def test_kv_out_of_sample_p6():
    # AWS GDS post: up to 660K tokens on a P6 (8× B200, 180 GB each); the basis fitted on the P5en's ~82K,
    # TurboQuant as published (3.5 bits + a 16-bit norm per 128-value vector), every head counted
    predicted = int((8 * 180e9 - FP8_WEIGHTS) // (2 * 126 * 128 * 128 * (3.5 + 16 / 128) / 8))
    row = next(c for c in kvcache.check_published() if c.published.node == "p6")
    assert not row.published.fitted and row.projected == pytest.approx(predicted, rel=2e-3)
    assert row.ratio == pytest.approx(predicted / 660_000, rel=2e-3) and abs(row.ratio - 1) > 0.10  # a miss


def test_the_cold_start_chart_says_what_each_row_is():
    rows = cs.scenarios()
    fig = plots.plot_cold_start(rows)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    for r, label in zip(rows, labels):
        assert f"[{r.kind}]" in label
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert sum("of published" in n for n in notes) == sum(1 for r in rows if r.published_s)
