"""Small torch transformers and the references the layout tests compare camlens with.

The references are written from the formulas, on tokens reshaped by hand: prefix tokens dropped,
patch tokens read row by row into an ``(h, w)`` grid, channels moved first.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A ViT: patch embedding, ``prefix`` learned tokens (class, distillation...), blocks, a
    final norm and a head on the class token."""

    def __init__(
        self,
        size: int = 32,
        patch: int = 4,
        dim: int = 16,
        depth: int = 2,
        prefix: int = 1,
        classes: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        tokens = prefix + (size // patch) ** 2
        self.prefix_tokens = nn.Parameter(torch.randn(1, prefix, dim))
        self.pos = nn.Parameter(0.5 * torch.randn(1, tokens, dim))
        self.blocks = nn.Sequential(*[Block(dim, 2) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.prefix_tokens.expand(len(x), -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


class FlatViT(nn.Module):
    """:class:`TinyViT` written flat: every block's layers are attributes of the model itself
    (``norm1_0``, ``attn_0``, ``norm2_0``, ``mlp_0``, ...), or with ``lists`` one list per kind
    of layer (``norm1.0``, ``attn.0``, ...), as a hand-written ViT may be."""

    def __init__(self, twin: TinyViT, *, lists: bool = False) -> None:
        super().__init__()
        self.twin_depth, self.lists = len(twin.blocks), lists
        self.patch_embed, self.norm, self.head = twin.patch_embed, twin.norm, twin.head
        self.prefix_tokens, self.pos = twin.prefix_tokens, twin.pos
        for part in ("norm1", "attn", "norm2", "mlp"):
            modules = [getattr(block, part) for block in twin.blocks]
            if lists:  # one list per kind of layer: norm1.0, norm1.1, ...
                setattr(self, part, nn.ModuleList(modules))
            else:  # every layer an attribute: norm1_0, norm1_1, ...
                for i, module in enumerate(modules):
                    setattr(self, f"{part}_{i}", module)

    def _part(self, part: str, i: int) -> nn.Module:
        return getattr(self, part)[i] if self.lists else getattr(self, f"{part}_{i}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.prefix_tokens.expand(len(x), -1, -1), t], dim=1) + self.pos
        for i in range(self.twin_depth):
            h = self._part("norm1", i)(t)
            t = t + self._part("attn", i)(h, h, h, need_weights=False)[0]
            t = t + self._part("mlp", i)(self._part("norm2", i)(t))
        return self.head(self.norm(t)[:, 0])


class ChannelsLastNet(nn.Module):
    """A conv stem, then channels-last layers (``permute``, LayerNorm, Linear, GELU), as Swin
    stages and ConvNeXt blocks have, then a mean over positions and a head."""

    def __init__(self, width: int = 16, classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.out = nn.Identity()  # defined first: no module before it says a layout
        self.stem = nn.Conv2d(3, width, 4, stride=4)
        self.norm = nn.LayerNorm(width)
        self.mix = nn.Linear(width, width)
        self.act = nn.GELU()
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.out(self.act(self.mix(self.norm(self.stem(x).permute(0, 2, 3, 1)))))
        return self.head(t.mean(dim=(1, 2)))


def captured(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, classes: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Return a layer's output and the gradient of each image's class score w.r.t. it, by
    hand (a hook and ``torch.autograd.grad``), in the layer's own layout."""
    store: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, a, out: store.append(out))
    try:
        out = model(x)
    finally:
        handle.remove()
    score = out[torch.arange(len(x)), torch.tensor(classes)].sum()
    (grad,) = torch.autograd.grad(score, store[0])
    return store[0].detach().numpy().astype(np.float64), grad.numpy().astype(np.float64)


def tokens_to_grid(a: np.ndarray, prefix: int, grid: tuple[int, int]) -> np.ndarray:
    """``(N, L, C)`` tokens -> ``(N, C, h, w)``: prefix tokens dropped, patches row-major."""
    n, _, c = a.shape
    return a[:, prefix:, :].reshape(n, grid[0], grid[1], c).transpose(0, 3, 1, 2)


def gradcam_raw(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Grad-CAM before ReLU (Selvaraju et al.): ``sum_k mean_ij(dy/dA_k) * A_k``."""
    return (g.mean(axis=(2, 3), keepdims=True) * a).sum(axis=1)


def eigencam_raw(a: np.ndarray) -> np.ndarray:
    """Eigen-CAM (Muhammad & Yeasin): the ``(hw, K)`` activations projected on their first
    right singular vector, signed so that each map sums to a non-negative value."""
    out = []
    for item in a:
        k, h, w = item.shape
        mat = item.reshape(k, h * w).T
        _, _, vt = np.linalg.svd(mat, full_matrices=False)
        proj = mat @ vt[0]
        out.append((proj if proj.sum() >= 0 else -proj).reshape(h, w))
    return np.stack(out)


#: A two-block ViT on 32x32 inputs in ``transformers``' config keywords (ViT, DeiT, CLIP's
#: vision tower): 8x8 patches, a 4x4 grid, width 32.
TINY_VIT = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
