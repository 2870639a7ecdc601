"""What chapters use to show results: figures with captions, distinct class colours, recorded measurements."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from sgn.lab.report import CAPTION_PREFIX, FIGURE_DPI, class_colours, read_record, show_figure  # noqa: E402
from sgn.utils import SGNError  # noqa: E402


def test_show_figure_saves_sharp_and_captions(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1])
    path = show_figure(fig, tmp_path, "line", "A line.")
    png = path.read_bytes()
    assert FIGURE_DPI == 192 and int.from_bytes(png[16:20], "big") > 300  # a 2-inch figure at twice the CSS density
    assert shown[0].retina and shown[1].data == f"{CAPTION_PREFIX} (line).** A line."
    assert not plt.get_fignums()  # closed: the notebook shows the image once, not twice


def test_show_figure_refuses_an_empty_caption(tmp_path):
    fig = plt.figure()
    with pytest.raises(SGNError, match="figure 'x': expected a caption"):
        show_figure(fig, tmp_path, "x", "  ")
    plt.close(fig)
    assert not (tmp_path / "x.png").exists()


def test_class_colours_are_distinct_for_the_books_classes():
    names = [f"class{i}" for i in range(12)]
    colours = class_colours(names)
    assert len(set(colours.values())) == 12 and list(colours) == names


def test_recorded_measurements():
    recipe = read_record("recipe_screen")
    assert {"change", "kept", "minus_reference_95ci"} <= set(recipe.columns)
    kept = recipe[recipe["kept"].str.startswith("yes")]
    assert list(kept["overrides"]) == ["data.segment_samples=8192", "attention=math"]
    augment = read_record("augment_screen")
    assert not augment["kept"].str.startswith("yes").any()  # nothing kept: the confirmation was called below
    with pytest.raises(SGNError, match=r"record 'nope': no nope.csv in .*; records: augment_screen, recipe_screen"):
        read_record("nope")
