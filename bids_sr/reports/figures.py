"""Report figures: orthogonal slices, a zoomed cortex crop, error maps, registration overlay.

Why matplotlib and not nilearn: matplotlib is already a declared dependency (nilearn is not,
and would bring scikit-learn, pandas and joblib into the container for three figures); with
the ``Agg`` backend it renders headless and deterministically to PNG in memory; and the
figures we need (several volumes side by side on one world-aligned grid, a shared intensity
window, a zoomed crop, an edge overlay) are a few ``imshow`` calls on slices we sample
ourselves, which keeps the geometry explicit and tested.

Geometry: every panel is sampled on the *display grid*, the output image reoriented to RAS
with :func:`nibabel.as_closest_canonical` (so axial slices look axial whatever the scanner
orientation). Any other volume (the LR input, the truth, a registered T2w) is sampled on
that grid's three centre planes through world coordinates with nearest-neighbour lookup,
which shows the input as it would look nearest-upsampled to the output grid. Panels are
drawn in the neurological convention (subject's right on the right of the panel) with the
physical aspect ratio of the voxels.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from scipy import ndimage  # noqa: E402

PLANES = ("sagittal", "coronal", "axial")
# display axes (rows, columns) of each plane in the RAS grid: image shown as data[rows, cols]
# with rows = superior or anterior upwards (origin lower) and columns = right or anterior
_PLANE_AXES = {"sagittal": (2, 1), "coronal": (2, 0), "axial": (1, 0)}
_PLANE_NORMAL = {"sagittal": 0, "coronal": 1, "axial": 2}


@dataclass(frozen=True)
class DisplayGrid:
    """The RAS-oriented grid the panels are sampled on (shape, affine, voxel sizes)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def zooms(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def centre(self) -> tuple[int, int, int]:
        return tuple(n // 2 for n in self.shape)


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``data`` reoriented to the closest RAS orientation (axis flips/permutations only)."""
    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, np.float32), affine))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=float)


def display_grid(data: np.ndarray, affine: np.ndarray) -> tuple[DisplayGrid, np.ndarray]:
    """The display grid of an output image, and the image's data on it."""
    ras, ras_affine = canonical(data, affine)
    return DisplayGrid(shape=tuple(ras.shape), affine=ras_affine), ras


def sample_plane(
    data: np.ndarray, affine: np.ndarray, grid: DisplayGrid, plane: str, order: int = 0
) -> np.ndarray:
    """Sample ``data`` (any grid, world ``affine``) on ``grid``'s centre ``plane``.

    Returns a 2D array indexed ``[row, column]`` in display order (see module docstring);
    voxels outside ``data``'s field of view are 0.
    """
    normal = _PLANE_NORMAL[plane]
    rows_axis, cols_axis = _PLANE_AXES[plane]
    index = np.indices((grid.shape[rows_axis], grid.shape[cols_axis]), dtype=float)
    voxels = np.zeros((4,) + index.shape[1:])
    voxels[normal] = grid.centre[normal]
    voxels[rows_axis] = index[0]
    voxels[cols_axis] = index[1]
    voxels[3] = 1.0
    mapping = np.linalg.inv(np.asarray(affine, dtype=float)) @ grid.affine
    source = np.tensordot(mapping, voxels, axes=1)[:3]
    return ndimage.map_coordinates(
        np.asarray(data, dtype=np.float32), source, order=order, mode="constant", cval=0.0
    )


def intensity_window(data: np.ndarray) -> tuple[float, float]:
    """Display window: 0.5th to 99.5th percentile of the non-background voxels."""
    values = data[np.abs(data) > 1e-6 * (np.abs(data).max() or 1.0)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def cortex_box(plane_image: np.ndarray, fraction: float = 0.3) -> tuple[int, int, int, int]:
    """A square (row0, row1, col0, col1) at the top edge of the head/brain in a coronal plane.

    The top-most row holding foreground, centred on the foreground's middle column, shifted
    down so the box holds the cortex and a margin of background: where super-resolution
    shows (or fails to show) detail.
    """
    rows, cols = plane_image.shape
    size = max(8, int(round(fraction * min(rows, cols))))
    low, high = intensity_window(plane_image)
    foreground = plane_image > low + 0.25 * (high - low)
    if not foreground.any():
        r0, c0 = (rows - size) // 2, (cols - size) // 2
    else:
        filled = np.flatnonzero(foreground.any(axis=1))
        top = int(filled.max())  # rows run upwards (superior is the largest row)
        middle = int(round(np.flatnonzero(foreground.any(axis=0)).mean()))
        r0 = top - size + max(2, size // 6)
        c0 = middle - size // 2
    r0 = int(np.clip(r0, 0, max(0, rows - size)))
    c0 = int(np.clip(c0, 0, max(0, cols - size)))
    return r0, min(rows, r0 + size), c0, min(cols, c0 + size)


def _aspect(grid: DisplayGrid, plane: str) -> float:
    rows_axis, cols_axis = _PLANE_AXES[plane]
    return float(grid.zooms[rows_axis] / grid.zooms[cols_axis])


def figure_png(fig: plt.Figure, dpi: int = 90) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    plt.close(fig)
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI, to embed a PNG in self-contained HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass
class Layer:
    """One row of a comparison figure: a volume on any grid, how to show it."""

    label: str
    data: np.ndarray
    affine: np.ndarray
    # "anatomy" (shared grey window), "contrast" (another contrast: its own grey window),
    # "error" (own magma window), "difference" (signed: diverging map centred at 0) or
    # "uncertainty" (non-negative: 0 … its 99.5th percentile, with a colour bar)
    kind: str = "anatomy"


#: Signed differences: dark at 0 (like the background), blue below, orange/red above.
DIFFERENCE_CMAP = "berlin"
#: Non-negative maps (uncertainty): black at 0, bright where large.
UNCERTAINTY_CMAP = "inferno"


def difference_limit(planes: Sequence[np.ndarray]) -> float:
    """Symmetric colour limit of a signed difference: 99.5th percentile of its non-zero |values|."""
    values = np.concatenate([np.abs(p).ravel() for p in planes])
    values = values[values > 0]
    return float(np.percentile(values, 99.5)) if values.size else 1.0


def _colour_bar(fig: plt.Figure, ax: plt.Axes, image, limit: float, signed: bool = True) -> None:
    """A small horizontal colour bar inside ``ax``'s lower edge, labelled with its range:
    −limit … +limit (``signed``), else 0 … limit."""
    bar = ax.inset_axes([0.08, 0.06, 0.84, 0.07])
    ticks = [-limit, 0, limit] if signed else [0, limit / 2, limit]
    colorbar = fig.colorbar(image, cax=bar, orientation="horizontal", ticks=ticks)
    colorbar.ax.set_xticklabels([f"−{limit:.3g}", "0", f"+{limit:.3g}"] if signed
                                else ["0", f"{limit / 2:.3g}", f"{limit:.3g}"])  # fmt: skip
    colorbar.ax.tick_params(colors="white", labelsize=7, length=2)
    colorbar.outline.set_edgecolor("white")


def comparison_png(layers: Sequence[Layer], grid: DisplayGrid, *, crop: bool = True) -> bytes:
    """Rows = layers, columns = sagittal, coronal, axial (+ the zoomed cortex crop).

    Anatomy rows share one grey window (taken from the first anatomy layer's planes, so the
    input, result and truth are directly comparable); contrast rows (a T2w reference) get a
    grey window of their own; error rows use ``magma`` from 0 to their 99th percentile;
    difference rows (signed, e.g. guided − mono) a diverging map centred at 0 with symmetric
    limits (:func:`difference_limit`) and a colour bar in their last panel; uncertainty rows
    ``inferno`` from 0 to that limit, with a colour bar too. The crop box is
    drawn on the coronal panels.
    """
    if not layers:
        raise ValueError("comparison_png needs at least one layer")
    planes = [[sample_plane(layer.data, layer.affine, grid, p) for p in PLANES] for layer in layers]
    anatomy = [i for i, layer in enumerate(layers) if layer.kind == "anatomy"]
    first = anatomy[0] if anatomy else 0
    window = intensity_window(np.concatenate([p.ravel() for p in planes[first]]))
    box = cortex_box(planes[first][1]) if crop else None
    ncols = len(PLANES) + (1 if crop else 0)
    fig, axes = plt.subplots(
        len(layers), ncols, figsize=(2.6 * ncols, 2.6 * len(layers)), squeeze=False
    )
    fig.patch.set_facecolor("black")
    for row, (layer, layer_planes) in enumerate(zip(layers, planes, strict=True)):
        if layer.kind == "error":
            values = np.concatenate([np.abs(p).ravel() for p in layer_planes])
            vmin, vmax, cmap = 0.0, float(np.percentile(values, 99) or 1.0), "magma"
        elif layer.kind == "difference":
            limit = difference_limit(layer_planes)
            vmin, vmax, cmap = -limit, limit, DIFFERENCE_CMAP
        elif layer.kind == "uncertainty":
            vmin, vmax, cmap = 0.0, difference_limit(layer_planes), UNCERTAINTY_CMAP
        elif layer.kind == "contrast":
            own = np.concatenate([p.ravel() for p in layer_planes])
            (vmin, vmax), cmap = intensity_window(own), "gray"
        else:
            (vmin, vmax), cmap = window, "gray"
        shown = [np.abs(p) if layer.kind == "error" else p for p in layer_planes]
        if crop:
            r0, r1, c0, c1 = box
            shown.append(shown[1][r0:r1, c0:c1])
        for col, (ax, image) in enumerate(zip(axes[row], shown, strict=True)):
            plane = PLANES[1] if col == 3 else PLANES[col]  # the crop is coronal
            shown_image = ax.imshow(
                image,
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                origin="lower",
                interpolation="nearest",
                aspect=_aspect(grid, plane),
            )
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col == 1 and crop:
                r0, r1, c0, c1 = box
                ax.add_patch(
                    Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, ec="#2ecc71")
                )
            if row == 0:
                title = "cortex (zoom)" if col == 3 else PLANES[col]
                ax.set_title(title, color="white", fontsize=9)
        if layer.kind in ("difference", "uncertainty"):
            _colour_bar(fig, axes[row][-1], shown_image, vmax, signed=layer.kind == "difference")
        axes[row][0].set_ylabel(layer.label, color="white", fontsize=10)
    fig.tight_layout(pad=0.3)
    return figure_png(fig)


def edge_map(data: np.ndarray, zooms: Sequence[float], percentile: float = 90.0) -> np.ndarray:
    """Edges without Canny: gradient magnitude of the σ = 1 mm smoothed image above its
    ``percentile`` within the foreground (voxels above a tenth of the 99th percentile)."""
    data = np.asarray(data, dtype=np.float32)
    smooth = ndimage.gaussian_filter(data, [1.0 / z for z in zooms])
    grads = np.gradient(smooth, *zooms)
    magnitude = np.sqrt(sum(g * g for g in grads))
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=bool)
    foreground = data > 0.1 * np.percentile(positive, 99)
    if not foreground.any():
        return np.zeros(data.shape, dtype=bool)
    return (magnitude > np.percentile(magnitude[foreground], percentile)) & foreground


def overlay_png(
    background: np.ndarray,
    background_affine: np.ndarray,
    edges: np.ndarray,
    edges_affine: np.ndarray,
    *,
    title: str,
) -> bytes:
    """Three centre planes of ``background`` (grey) with ``edges`` (red) drawn on top."""
    grid, ras = display_grid(background, background_affine)
    vmin, vmax = intensity_window(ras)
    fig, axes = plt.subplots(1, 3, figsize=(8.4, 3.0), squeeze=False)
    fig.patch.set_facecolor("black")
    for ax, plane in zip(axes[0], PLANES, strict=True):
        image = sample_plane(ras, grid.affine, grid, plane)
        edge = sample_plane(edges.astype(np.float32), edges_affine, grid, plane) > 0.5
        ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, origin="lower",
                  interpolation="nearest", aspect=_aspect(grid, plane))  # fmt: skip
        rgba = np.zeros(edge.shape + (4,), dtype=np.float32)
        rgba[edge] = (1.0, 0.15, 0.1, 0.9)
        ax.imshow(rgba, origin="lower", interpolation="nearest", aspect=_aspect(grid, plane))
        ax.set_title(plane, color="white", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, color="white", fontsize=10)
    fig.tight_layout(pad=0.3)
    return figure_png(fig)


def registration_overlay_png(
    t1w_path: str, reference_path: str, reference_suffix: str = "T2w"
) -> bytes:
    """PNG of the registered reference (a T2w or FLAIR: ``reference_suffix``, named in the
    title) with the T1w's edges on top, to judge the registration.

    Both images are read from disk; they may be on different grids (sampled through world
    coordinates). Edges: :func:`edge_map` of the T1w.
    """
    t1w = nib.load(str(t1w_path))
    reference = nib.load(str(reference_path))
    t1w_data = np.asarray(t1w.dataobj, dtype=np.float32)
    zooms = np.sqrt((np.asarray(t1w.affine)[:3, :3] ** 2).sum(axis=0))
    edges = edge_map(np.squeeze(t1w_data), zooms)
    return overlay_png(
        np.squeeze(np.asarray(reference.dataobj, dtype=np.float32)),
        reference.affine,
        edges,
        t1w.affine,
        title=f"registered {reference_suffix} with T1w edges (red)",
    )
