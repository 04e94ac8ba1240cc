"""Build a Hugging Face model folder from the packaged SmolLM2 GGUF (dequantised to fp32).

vLLM and EasyDeL load Hugging Face folders, llama.cpp loads the GGUF; for a fair comparison
every engine must run the same weights. transformers 5 cannot ``save_pretrained`` a model it
loaded from GGUF, so this script loads the GGUF with transformers, then writes the folder
itself: ``config.json`` (without the GGUF quantizer entry, with ``architectures`` and a
top-level ``rope_theta`` for older readers), ``generation_config.json``, the tokenizer files and
``model.safetensors`` holding the dequantised weights (tied embeddings stored once).

    .venv/bin/python benchmarks/peers/build_hf_folder.py --out /work/peers/smollm2-hf
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODEL = "smollm2-135m-instruct"


def build_hf_folder(out: Path) -> Path:
    """Write the folder to ``out`` (created if missing) and return it."""
    import torch
    import transformers
    from safetensors.torch import save_file

    from esurge_core.packaged_models import resolve_model

    gguf = resolve_model(MODEL)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, local_files_only=True
    )
    out.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    # A GGUF-loaded config still names the GGUF quantizer (vLLM rejects it, EasyDeL warns), and
    # older readers (EasyDeL 0.3) look for architectures and a top-level rope_theta.
    config.pop("quantization_config", None)
    config["architectures"] = [type(model).__name__]
    config["dtype"] = "float32"
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    model.generation_config.to_json_file(str(out / "generation_config.json"))
    tokenizer.save_pretrained(str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    args = parser.parse_args()
    print(build_hf_folder(args.out))


if __name__ == "__main__":
    main()
