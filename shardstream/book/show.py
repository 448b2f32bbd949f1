"""Pictures of batches: the grid of images with their labels that D2L §4.2 draws.

:func:`show_images` is the chapter's ``show_images(imgs, num_rows, num_cols, titles, scale)``,
drawn with Pillow instead of matplotlib: it returns a :class:`PIL.Image.Image`, which a Jupyter
notebook displays inline (``_repr_png_``) and which ``.save("batch.png")`` writes to a file.
:func:`show_command` is ``shardstream show``: the first (or a random) batch of a split, exactly as
the loaders deliver it, drawn with its text labels and written to a PNG without a display.
"""

from __future__ import annotations

import importlib
import io
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError
from ..loaders.execute import iter_batches, open_stream
from ..loaders.plan import plan_epoch
from ..loaders.resize import to_float
from ..storage import write_bytes

#: pixels per unit of ``scale``: matplotlib's 100 dpi, so ``scale=1.5`` gives the 150-pixel
#: cells of the book's figure.
PIXELS_PER_SCALE = 100
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def _to_uint8_image(img, index):
    """One image (PIL image, numpy array, torch or tf tensor) -> uint8 array (h, w) or (h, w, 3).

    Accepted layouts: (h, w), (h, w, C) and (C, h, w) with C in {1, 3}; float values are taken
    to lie in [0, 1] (what the loaders deliver), integer values in [0, 255].
    """
    if isinstance(img, Image.Image):
        img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
        return np.asarray(img)
    if hasattr(img, "detach"):  # a torch tensor, possibly on a GPU or requiring grad
        img = img.detach().cpu()
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)  # (C, h, w) -> (h, w, C)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3) or min(a.shape[:2]) == 0:
        raise InputError(
            f"show_images: image {index} has shape {a.shape}; expected (h, w), (h, w, 1|3) "
            f"or (1|3, h, w)")
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "f":
        return (np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.dtype.kind in "iub":
        return np.clip(a, 0, 255).astype(np.uint8)
    raise InputError(f"show_images: image {index} has dtype {a.dtype}; expected floats in [0, 1] "
                     f"or integers in [0, 255]")


def _font(size):
    """Pillow's built-in font at ``size`` pixels (needs no font files on the machine)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow built without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _fit(draw, text, font, width):
    """``text``, shortened with an ellipsis until it is at most ``width`` pixels wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def show_images(imgs, num_rows, num_cols, titles=None, scale=1.5):
    """Draw ``imgs`` in a ``num_rows`` x ``num_cols`` grid with ``titles`` under the images.

    ``imgs``: a sequence (or a batch array/tensor (N, h, w), (N, h, w, C) or (N, C, h, w)) of
    images; the first ``num_rows * num_cols`` are drawn, row by row, and missing cells stay
    blank. Grey images are drawn in grey (0 = black), pixels enlarged without smoothing so each
    stays visible (by a whole factor where the cell allows). Each cell is
    ``round(100 * scale)`` pixels wide, so the picture is
    ``num_cols * round(100 * scale)`` pixels wide and ``num_rows`` cells (plus a title line when
    ``titles`` are given) high.

    Returns a :class:`PIL.Image.Image` (RGB); ``.save(path)`` writes it. In a Jupyter notebook
    it is shown when the cell ends, as the book's matplotlib figure is -- also after the book's
    ``show_images(...);`` with its trailing ``;`` -- and once only.
    """
    num_rows, num_cols = int(num_rows), int(num_cols)
    if num_rows < 1 or num_cols < 1:
        raise InputError(f"show_images: num_rows={num_rows}, num_cols={num_cols}; both must be "
                         f">= 1")
    if not scale > 0:
        raise InputError(f"show_images: scale={scale!r} must be > 0")
    count = num_rows * num_cols
    images = [_to_uint8_image(img, i) for i, img in zip(range(count), imgs)]
    titles = [] if titles is None else [str(t) for t in list(titles)[:count]]

    cell = max(8, round(PIXELS_PER_SCALE * scale))
    pad = max(1, cell // 25)
    font_size = max(8, cell // 10)
    font = _font(font_size)
    title_h = (font_size + 2 * pad + 2) if titles else 0
    canvas = Image.new("RGB", (num_cols * cell, num_rows * (cell + title_h)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    box = cell - 2 * pad  # the image area inside a cell
    for i, a in enumerate(images):
        r, c = divmod(i, num_cols)
        x0, y0 = c * cell, r * (cell + title_h)
        h, w = a.shape[:2]
        f = box / max(h, w)
        f = float(int(f)) if f >= 1 else f  # enlarge by a whole factor: every pixel equally big
        size = (max(1, round(w * f)), max(1, round(h * f)))
        tile = Image.fromarray(a).convert("RGB").resize(size, Image.Resampling.NEAREST)
        top = y0 + pad + (box - size[1]) // 2
        canvas.paste(tile, (x0 + pad + (box - size[0]) // 2, top))
        if i < len(titles):  # just under the image
            text = _fit(draw, titles[i], font, cell - 2 * pad)
            draw.text((x0 + cell / 2, top + size[1] + 2 * pad), text, fill=TEXT, font=font,
                      anchor="mt")
    _draw_in_notebook(canvas)
    return canvas


#: ``show -o`` file extensions -> Pillow format
PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


#: pictures drawn by show_images in the running notebook cell, shown when the cell ends
_PENDING = []
_HOOKED = set()


def _notebook_shell():
    """The running Jupyter kernel's IPython shell, or None (a script, a terminal IPython).
    Found through ``sys.modules``: shardstream never imports IPython itself."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell if shell is not None and hasattr(shell, "kernel") else None


def _show_after_cell(result):
    """IPython ``post_run_cell`` hook: show the pictures the cell drew, unless the cell's own
    result (its last expression, displayed already) is that picture."""
    pending, _PENDING[:] = list(_PENDING), []
    display = importlib.import_module("IPython.display").display
    for picture in pending:
        if picture is not getattr(result, "result", None):
            display(picture)


def _draw_in_notebook(picture):
    """In a notebook, show ``picture`` at the end of the cell as matplotlib's inline backend
    does, so the book's ``show_images(...);`` (trailing ``;``) shows the grid too."""
    shell = _notebook_shell()
    if shell is None:
        return
    if id(shell) not in _HOOKED:
        shell.events.register("post_run_cell", _show_after_cell)
        _HOOKED.add(id(shell))
    _PENDING.append(picture)


def png_bytes(image):
    """The PNG encoding of a PIL image (deterministic: no timestamps in Pillow's PNG writer)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def picture_bytes(image, out):
    """``image`` encoded as the extension of ``out`` asks: ``.png`` (PNG), ``.jpg`` / ``.jpeg``
    (JPEG, quality 95); any other extension is an :class:`InputError` saying which work."""
    ext = ("." + str(out).rsplit(".", 1)[-1].lower()) if "." in str(out) else ""
    fmt = PICTURE_FORMATS.get(ext)
    if fmt is None:
        raise InputError(f"-o {out}: cannot tell the picture format from {ext or 'no extension'};"
                         f" name the file .png, .jpg or .jpeg")
    if fmt == "PNG":
        return png_bytes(image)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def first_batch(location, count, *, random=False, seed=0, resize=None, format="auto",
                token=None, storage_options=None):
    """The first batch of ``count`` samples of a split's epoch 0, as the loaders deliver it.

    ``random=False``: manifest order (the first ``count`` samples). ``random=True``: the
    shuffled plan of ``seed`` (shard shuffle + the default shuffle buffer), i.e. exactly the
    first batch ``torch_loader``/``tf_dataset`` would give with ``shuffle=True, seed=seed``.
    Returns (images float32 (b, h, w, C) in [0, 1], labels int64 (b,), manifest),
    b = min(count, N).
    """
    source = open_stream(location, format=format, token=token, storage_options=storage_options)
    manifest = source.manifest
    plan = plan_epoch(manifest.shard_sizes, batch_size=count, seed=seed, epoch=0, shuffle=random,
                      shard_shuffle=random)
    _, images, labels = next(iter(iter_batches(source, plan)))
    return to_float(images, resize), np.asarray(labels, dtype=np.int64), manifest


def show_command(location, out="batch.png", rows=2, cols=8, random=False, seed=0, resize=None,
                 scale=1.5, token=None, storage_options=None):
    """``shardstream show``: draw a batch of ``rows * cols`` images of the split at ``location``
    with their class names under them, write the picture (PNG, or JPEG for ``.jpg``) to ``out``
    atomically (temp file + rename)
    and print its path. Returns the path."""
    if rows < 1 or cols < 1:
        raise InputError(f"--rows {rows} --cols {cols}: both must be at least 1")
    picture_bytes(Image.new("RGB", (1, 1)), out)    # a bad extension: refused before reading
    images, labels, manifest = first_batch(location, rows * cols, random=random, seed=seed,
                                           resize=resize, token=token,
                                           storage_options=storage_options)
    titles = [manifest.classes[int(y)] for y in labels]
    picture = show_images(images, rows, cols, titles=titles, scale=scale)
    write_bytes(out, picture_bytes(picture, out))
    which = f"a random batch (seed {seed})" if random else "the first batch"
    print(f"wrote {out}: {which} of {location}, {len(labels)} images "
          f"({picture.width}x{picture.height} pixels)")
    return out
