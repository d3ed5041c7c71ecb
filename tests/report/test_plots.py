"""The Pillow line chart: points land where the axes say, bad input is refused."""

import pytest

from leukolens.report.plots import COLOURS, line_chart


def test_series_are_drawn_in_their_colours_at_the_right_height():
    image = line_chart({"a": [(0.1, 0.0), (1.0, 1.0)], "b": [(0.1, 0.5)]}, title="t", x_label="x", y_label="y",
                       log_x=True, size=(400, 300))
    assert image.size == (400, 300)
    pixels = {image.getpixel((x, y)) for x in range(0, 400, 2) for y in range(0, 300, 2)}
    assert COLOURS[0] in pixels and COLOURS[1] in pixels
    # Plot area: x from 70 to 400 - 190 = 210, y from 40 (1.0) to 300 - 60 = 240 (0.0). "b" at (0.1, 0.5) -> (70, 140).
    assert image.getpixel((71, 140)) == COLOURS[1]


def test_empty_series_and_non_positive_log_values_are_refused():
    with pytest.raises(ValueError, match="empty"):
        line_chart({"a": []}, title="t", x_label="x", y_label="y")
    with pytest.raises(ValueError, match="positive"):
        line_chart({"a": [(0.0, 0.5)]}, title="t", x_label="x", y_label="y", log_x=True)
