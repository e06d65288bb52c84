"""Explanation.image: one image's rows of a batch explanation, as views, with the metadata."""

from __future__ import annotations

import numpy as np
import pytest

import camlens
from camlens.explanation import Explanation


def _explanation(n_images: int = 3, t: int = 2, outputs: bool = True) -> Explanation:
    m = n_images * t
    rng = np.random.default_rng(0)
    return Explanation(
        maps=rng.random((m, 4, 5)).astype(np.float32),
        raw=rng.standard_normal((m, 2, 3)).astype(np.float32),
        scores=np.arange(m, dtype=np.float64),
        image_index=np.repeat(np.arange(n_images, dtype=np.int64), t),
        units=np.arange(m, dtype=np.int64) + 10,
        signs=-np.ones(m),
        target=f"top-{t} classes",
        target_kind="TopK",
        score_kind="pre-softmax logit",
        layers=("features", "head"),
        method="gradcam",
        input_size=(4, 5),
        relu=True,
        framework="keras",
        version="9.9",
        outputs=rng.standard_normal((n_images, 7)).astype(np.float32) if outputs else None,
    )


def test_image_gives_that_images_rows_and_output() -> None:
    exp = _explanation()
    part = exp.image(1)
    assert isinstance(part, camlens.ImageExplanation)
    assert part.image_index == 1 and len(part) == 2
    np.testing.assert_array_equal(part.maps, exp.maps[2:4])
    np.testing.assert_array_equal(part.raw, exp.raw[2:4])
    np.testing.assert_array_equal(part.scores, [2.0, 3.0])
    np.testing.assert_array_equal(part.units, [12, 13])
    np.testing.assert_array_equal(part.signs, [-1.0, -1.0])
    assert part.output is not None and exp.outputs is not None
    np.testing.assert_array_equal(part.output, exp.outputs[1])
    shared = ("target", "target_kind", "score_kind", "layers", "method", "input_size", "relu")
    for name in (*shared, "framework", "version"):
        assert getattr(part, name) == getattr(exp, name), name


def test_image_arrays_are_read_only_views() -> None:
    exp = _explanation()
    part = exp.image(2)
    assert np.shares_memory(part.maps, exp.maps)
    for array in (part.maps, part.raw, part.scores, part.units, part.signs, part.output):
        assert array is not None and not array.flags.writeable
    with pytest.raises(AttributeError):
        part.method = "other"  # type: ignore[misc]


def test_image_of_one_target_per_image_and_without_outputs() -> None:
    exp = _explanation(n_images=2, t=1, outputs=False)
    assert [len(exp.image(i)) for i in range(2)] == [1, 1]
    assert exp.image(1).output is None
    assert float(exp.image(1).scores[0]) == 1.0


@pytest.mark.parametrize("index", [3, -1, 1.0, True])
def test_an_index_outside_the_batch_is_a_clear_error(index: object) -> None:
    with pytest.raises(camlens.BadInputError, match="image"):
        _explanation().image(index)  # type: ignore[arg-type]


def test_a_batchs_image_equals_the_single_call() -> None:
    torch = pytest.importorskip("torch")
    from nets import TrunkHead

    model = TrunkHead().eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    batch = camlens.explain(model, x, target=camlens.TopK(2))
    single = camlens.explain(model, x[2:3], target=camlens.TopK(2)).image(0)
    part = batch.image(2)
    np.testing.assert_allclose(part.maps, single.maps, atol=1e-5)
    np.testing.assert_allclose(part.scores, single.scores, rtol=1e-5)
    np.testing.assert_array_equal(part.units, single.units)
    assert part.output is not None and single.output is not None
    np.testing.assert_allclose(part.output, single.output, rtol=1e-5, atol=1e-6)
