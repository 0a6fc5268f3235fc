"""Figures: PNGs of the expected pixel size with the right numbers drawn, and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install 'jaxcalc[plot]')")

from jaxcalc import plot  # noqa: E402
from jaxcalc.cli import main  # noqa: E402
from jaxcalc.numerics import compare, tolerance  # noqa: E402


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's signature and IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def _log(epochs: int = 6) -> dict:
    """A log in the shape 'jaxcalc train --json' writes, with made-up but plausible numbers."""
    e = np.arange(1, epochs + 1)
    rows = [
        {
            "epoch": int(k),
            "step": int(22 * k),
            "train_loss": float(2 / k),
            "test_loss": float(2.2 / k + 0.1),
            "train_accuracy": float(1 - 0.5 / k),
            "test_accuracy": float(0.97 - 0.4 / k),
        }
        for k in e
    ]
    return {"sizes": [64, 128, 10], "config": {"grad": "handwritten"}, "history": rows, "test_accuracy": 0.9}


def _drawn(path) -> bool:
    """True when the image is not a single flat colour."""
    from matplotlib.image import imread

    return float(np.asarray(imread(path)).std()) > 0.01


@pytest.mark.parametrize("kind", ["descent", "contour", "train"])
def test_cli_writes_png_of_expected_size(kind, tmp_path, capsys):
    out = tmp_path / f"{kind}.png"
    argv = ["plot", kind, "--out", str(out)]
    if kind == "train":
        log = tmp_path / "log.json"
        log.write_text(json.dumps(_log()))
        argv += ["--log", str(log)]
    assert main(argv) == 0
    assert out.stat().st_size > 10_000
    assert png_size(out) == plot.PIXELS == (1200, 500)
    assert _drawn(out)
    assert f"wrote {out}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []  # no temporary left


def test_descent_figure_draws_the_closed_form():
    fig = plot.descent_figure(x0=10.0, steps=20)
    lines = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("lr =")]
    assert len(lines) == len(plot.LEARNING_RATES)
    labels = [ln.get_label() for ln in lines]
    assert labels[-2].endswith("oscillates") and labels[-1].endswith("diverges")
    assert all(lbl.endswith("converges") for lbl in labels[:-2])
    for lr, line in zip(plot.LEARNING_RATES, lines, strict=True):
        closed = 10.0 * (1 - 2 * lr) ** np.arange(21)
        assert compare(line.get_ydata(), closed).error <= tolerance("float64", "exact")


def test_contour_figure_paths_end_at_the_minimum():
    fig = plot.contour_figure()
    ax = fig.axes[0]
    gd, newton = (ln for ln in ax.lines if ln.get_label().startswith(("gradient", "Newton")))
    for line in (gd, newton):
        end = np.array([line.get_xdata()[-1], line.get_ydata()[-1]])
        assert np.max(np.abs(end - 1)) < 1e-4
        assert (line.get_xdata()[0], line.get_ydata()[0]) == (-1.2, 1.0)
    assert len(newton.get_xdata()) < 10 < 1000 < len(gd.get_xdata())


def test_train_figure_draws_the_log():
    log = _log()
    fig = plot.train_figure(log)
    ax_loss, ax_acc = fig.axes[:2]
    np.testing.assert_allclose(ax_loss.lines[1].get_ydata(), [r["test_loss"] for r in log["history"]])
    np.testing.assert_allclose(
        ax_acc.lines[0].get_ydata(), [100 * r["train_accuracy"] for r in log["history"]]
    )
    assert "64-128-10" in ax_loss.get_title()


BAD_LOGS = {
    "missing": None,
    "not_json": "{epoch: 1",
    "no_history": json.dumps({"test_accuracy": 0.9}),
    "bad_record": json.dumps({"history": [{"epoch": 1, "train_loss": 0.1}]}),
    "deep_nesting": "[" * 100_000 + "]" * 100_000,
    "huge_number": json.dumps({"history": [{**_log()["history"][0], "train_loss": 10**400}]}),
    "nan_loss": json.dumps({"history": [{**_log()["history"][0], "test_loss": float("nan")}]}),
    "fifo": "FIFO",
}


@pytest.mark.parametrize("kind", list(BAD_LOGS), ids=list(BAD_LOGS))
def test_bad_log_is_one_line(kind, tmp_path, capsys):
    log = tmp_path / "log.json"
    if BAD_LOGS[kind] == "FIFO":
        os.mkfifo(log)  # opening it to read would block forever
    elif BAD_LOGS[kind] is not None:
        log.write_text(BAD_LOGS[kind])
    out = tmp_path / "train.png"
    signal.alarm(60)  # fail rather than hang
    try:
        assert main(["plot", "train", "--log", str(log), "--out", str(out)]) == 2
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "log" in err and "Traceback" not in err
    assert not out.exists()


def test_usage_errors(tmp_path, capsys):
    assert main(["plot", "descent", "--out", str(tmp_path / "no" / "such" / "d.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["plot", "descent", "--log", "x.json"]) == 2
    assert "--log goes with" in capsys.readouterr().err
    assert main(["plot", "pie"]) == 2


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert main(["plot", "descent", "--out", str(tmp_path / "d.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'jaxcalc[plot]'" in err
    assert not (tmp_path / "d.png").exists()


def test_svg_out_is_svg(tmp_path, capsys):
    out = tmp_path / "descent.svg"
    assert main(["plot", "descent", "--out", str(out)]) == 0
    root = ET.parse(out).getroot()  # well-formed XML ...
    assert root.tag == "{http://www.w3.org/2000/svg}svg"  # ... whose root is an SVG element
    assert root.get("width") == "864pt" and root.get("height") == "360pt"  # FIGSIZE 12 x 5 in
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 20  # lines are drawn
    assert not out.read_bytes().startswith(b"\x89PNG")
    assert f"wrote {out} (SVG" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["fig.jpg", "fig.pdf", "fig.PNG.txt"])
def test_other_formats_are_refused(name, tmp_path, capsys):
    assert main(["plot", "descent", "--out", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "name a .png or .svg file" in err
    assert list(tmp_path.iterdir()) == []


def test_out_may_not_overwrite_the_log(tmp_path, capsys):
    log = tmp_path / "log.png"  # a log under a figure's name: the collision is by file, not by name
    log.write_text(json.dumps(_log()))
    before = log.read_bytes()
    assert main(["plot", "train", "--log", str(log), "--out", str(log)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "would overwrite the --log it reads" in err
    assert log.read_bytes() == before


def test_log_with_fields_of_the_wrong_type_still_plots(tmp_path, capsys):
    log = {**_log(), "config": "x", "sizes": 7}
    fig = plot.train_figure(log)
    assert fig.axes[0].get_title() == "MLP on digits, backprop"
