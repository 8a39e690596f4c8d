"""walmafa's part of ``make demo``: the shipped WalMaFa weights enhance held-out synthetic low-light photos.

The weights (``walmafa/weights/``, trained by ``tools/walmafa_train.py``) never saw the held-out photos ``coffee`` and
``flower``; the demo darkens them with the seeded camera model of ``commons.data.lol`` and reports PSNR/SSIM of the
input and of WalMaFa's output (``enhance_image`` with its default border padding, as ``walmafa enhance`` runs) against
the originals, with a labelled before/after grid. CPU only, no training.
"""

from __future__ import annotations

import time
from pathlib import Path

from commons.reporting import DemoSection, markdown_table, save_image_grid


def run(out_dir: Path, size: int = 128, variants: int = 2, seed: int = 0) -> DemoSection:
    from commons.data.lol import SyntheticLowLightDataset
    from commons.metrics import psnr, ssim

    from .engine import DEFAULT_BORDER, Enhancer, enhance_image
    from .pretrained import default_weights, model_card

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = default_weights()
    card = model_card(weights)
    enh = Enhancer.load(weights, device="cpu")
    enh.model.eval()
    test = SyntheticLowLightDataset("test", size=size, variants=variants, seed=seed)
    rows, panels, row_labels = [], [], []
    p_in, s_in, p_out, s_out = [], [], [], []
    t0 = time.perf_counter()
    for i in range(len(test)):
        low, high = test[i]
        out = enhance_image(enh.model, low)
        p_in.append(psnr(low, high))
        s_in.append(ssim(low, high))
        p_out.append(psnr(out, high))
        s_out.append(ssim(out, high))
        if i % variants == 0:
            panels += [low, out, high]
            row_labels.append(test.names[i])
    seconds = time.perf_counter() - t0
    n = len(test)
    rows = [
        {"image": "low-light input", "PSNR (dB)": sum(p_in) / n, "SSIM": sum(s_in) / n},
        {"image": "WalMaFa (shipped weights)", "PSNR (dB)": sum(p_out) / n, "SSIM": sum(s_out) / n},
    ]
    grid = save_image_grid(panels, out_dir / "walmafa_enhanced.png", nrow=3, scale=2,
                           col_labels=["low-light input", "WalMaFa (shipped)", "ground truth"], row_labels=row_labels)
    cfg = card.get("model_config", {})
    recipe = card.get("recipe", {})
    trained = (f"trained for {recipe.get('steps', '?')} steps (batch {recipe.get('batch_size', '?')}, "
               f"{recipe.get('crop', '?')}² crops, seed {recipe.get('seed', '?')})" if recipe else "see its model card")
    held = card.get("heldout", {})
    card_line = ""
    if held.get("walmafa") and held.get("retinex_unet"):
        card_line = (f" The model card's own held-out evaluation ({len(held.get('images', []))} images at "
                     f"{'×'.join(str(v) for v in held.get('size', []))}): input {held['input']['psnr']:.2f} dB, "
                     f"WalMaFa {held['walmafa']['psnr']:.2f} dB, Retinex U-Net (same budget) "
                     f"{held['retinex_unet']['psnr']:.2f} dB.")
    md = (f"Shipped WalMaFa weights (`{weights.name}`, released structure at width dim {cfg.get('dim', '?')}, blocks "
          f"{cfg.get('num_blocks', '?')}, {card.get('params', 0):,} parameters, pure-PyTorch Mamba), {trained} on "
          f"synthetic low-light crops of the embedded photos. Held out: `coffee` and `flower` (never trained on), "
          f"darkened with {variants} seeded exposure/noise draws each at short side {size}; {n} images enhanced on "
          f"CPU in {seconds:.1f} s with `walmafa enhance`'s default test-time border padding ({DEFAULT_BORDER} px "
          f"reflected on each side, against the one-pixel ring the convolutions' zero padding leaves at the edges of "
          f"these short-trained weights; the model card's numbers use none). Grid rows: the first draw of each "
          f"photo. PSNR/SSIM: RGB in [0,1], no GT-mean."
          f"{card_line}\n\n" + markdown_table(rows))
    return DemoSection(title="walmafa: low-light enhancement with wavelet Mamba", markdown=md, images=[grid],
                       summary=f"shipped weights on {n} held-out images: input {rows[0]['PSNR (dB)']:.2f} dB / "
                               f"{rows[0]['SSIM']:.3f} → WalMaFa {rows[1]['PSNR (dB)']:.2f} dB / {rows[1]['SSIM']:.3f}"
                               + (f"; Retinex U-Net baseline at the same steps {held['retinex_unet']['psnr']:.2f} dB "
                                  f"(model card)" if held.get("retinex_unet") else ""))
