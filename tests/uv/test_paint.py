"""morphface.uv.paint: distances to segments, the even-odd polygon test and soft edges, in closed form."""

from __future__ import annotations

import torch

from morphface.uv.paint import inside_polygon, segment_distance, soft_edge


def test_segment_distance_closed_forms():
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[4.0, 0.0]])
    pts = torch.tensor([[2.0, 3.0], [-3.0, 4.0], [7.0, 0.0], [1.0, 0.0]])
    assert torch.allclose(segment_distance(pts, a, b), torch.tensor([3.0, 5.0, 3.0, 0.0]))
    # a polyline: the nearest of its segments; a degenerate segment is a point
    line = torch.tensor([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0]])
    assert torch.allclose(segment_distance(torch.tensor([[6.0, 2.0]]), line[:-1], line[1:]), torch.tensor([2.0]))
    point = torch.tensor([[1.0, 1.0]])
    assert torch.allclose(segment_distance(torch.tensor([[4.0, 5.0]]), point, point), torch.tensor([5.0]))


def test_inside_polygon_square_and_concave():
    square = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0]])
    pts = torch.tensor([[1.0, 1.0], [3.0, 1.0], [1.0, -0.5], [0.5, 1.9]])
    assert inside_polygon(pts, square).tolist() == [True, False, False, True]
    notch = torch.tensor([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [2.0, 1.0], [0.0, 4.0]])  # a V cut from the top
    assert inside_polygon(torch.tensor([[2.0, 3.0], [2.0, 0.5], [0.5, 3.0]]), notch).tolist() == [False, True, True]


def test_soft_edge_ramp():
    d = torch.tensor([0.0, 1.0, 1.5, 2.0, 3.0])
    assert torch.allclose(soft_edge(d, 1.0, 1.0), torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0]))
