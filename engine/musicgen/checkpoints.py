"""Build randomly-initialised MusicGen checkpoints on disk, in the Hugging Face hub layout.

Nothing can download real weights in CI, so tests and benchmarks build checkpoints with the same files a hub
snapshot has (config.json, generation_config.json, model.safetensors, tokenizer files, preprocessor config)
and load them through the very code path a real checkpoint takes.

``tiny`` is a few-megabyte model for the test suite; ``small`` is the real musicgen-small architecture
(~590 M parameters, random weights) for benchmarks. From the shell (the README's examples use it):
``python -m engine.musicgen.checkpoints DIR [--size tiny|small] [--stereo] [--melody]``; it makes noise, not
music.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    EncodecConfig,
    EncodecFeatureExtractor,
    GenerationConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    MusicgenMelodyConfig,
    MusicgenMelodyDecoderConfig,
    MusicgenMelodyForConditionalGeneration,
    MusicgenProcessor,
    PreTrainedConfig,
    T5Config,
    T5Tokenizer,
)

Size = Literal["tiny", "small"]

SAMPLE_RATE = 32_000
CODEBOOK_SIZE = 2048  # decoder vocab; pad = bos = decoder_start = 2048 (the embedding's extra row)
MELODY_PROJECTION_GAIN = 50.0  # random melody checkpoints: how much louder the chroma speaks (see below)

# Music prompts: the tiny tokenizer's training text, and the prompts benchmarks generate from.
SAMPLE_PROMPTS = (
    "lofi hip hop beat with warm piano and vinyl crackle",
    "epic orchestral trailer music with drums and brass",
    "ambient synth pad, slow evolving texture, reverb",
    "upbeat funk bassline with slap bass and horns",
    "acoustic guitar folk song, gentle and warm",
    "techno kick drum 128 bpm, dark industrial",
    "jazz trio, brushed drums, upright bass, piano solo",
    "cinematic strings, sad and emotional, cello",
    "reggae rhythm guitar skank with dub delay",
    "chiptune 8-bit video game melody, happy",
)


def _train_tokenizer(vocab_size: int) -> T5Tokenizer:
    """A small T5-style (Unigram + Metaspace) tokenizer, trained in-process."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,  # its progress output goes to stdout, which a stdio MCP server must keep clean
    )
    tokenizer.train_from_iterator(SAMPLE_PROMPTS * 20, trainer=trainer)
    return T5Tokenizer(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
    )


@dataclass(frozen=True)
class _Dimensions:
    text_width: int
    text_ff: int
    text_layers: int
    text_heads: int
    codec_width: int
    codec_filters: int
    codec_lstm_layers: int
    decoder_width: int
    decoder_ff: int
    decoder_layers: int
    decoder_heads: int


_SIZES: dict[Size, _Dimensions] = {
    "tiny": _Dimensions(32, 64, 2, 2, 16, 4, 1, 32, 64, 2, 2),
    # The published facebook/musicgen-small configuration (stereo-small doubles the codebooks).
    "small": _Dimensions(768, 3072, 12, 12, 128, 64, 2, 1024, 4096, 24, 16),
}


def _configs(size: Size, stereo: bool, text_vocab: int, melody: bool) -> PreTrainedConfig:
    dims = _SIZES[size]
    channels = 2 if stereo else 1
    text = T5Config(
        vocab_size=text_vocab,
        d_model=dims.text_width,
        d_kv=dims.text_width // dims.text_heads,
        d_ff=dims.text_ff,
        num_layers=dims.text_layers,
        num_heads=dims.text_heads,
        pad_token_id=0,
        eos_token_id=1,
    )
    audio = EncodecConfig(
        sampling_rate=SAMPLE_RATE,
        audio_channels=1,  # stereo checkpoints decode each channel's codebooks with the mono codec
        codebook_size=CODEBOOK_SIZE,
        target_bandwidths=[2.2],
        upsampling_ratios=[8, 5, 4, 4],  # 640 samples per frame: 50 frames/s at 32 kHz
        hidden_size=dims.codec_width,
        num_filters=dims.codec_filters,
        num_lstm_layers=dims.codec_lstm_layers,
        use_causal_conv=False,
        use_conv_shortcut=False,
    )
    decoder = (MusicgenMelodyDecoderConfig if melody else MusicgenDecoderConfig)(
        vocab_size=CODEBOOK_SIZE,
        hidden_size=dims.decoder_width,
        num_hidden_layers=dims.decoder_layers,
        num_attention_heads=dims.decoder_heads,
        ffn_dim=dims.decoder_ff,
        num_codebooks=4 * channels,
        audio_channels=channels,
        max_position_embeddings=2048,
    )
    decoder.pad_token_id = decoder.bos_token_id = CODEBOOK_SIZE
    config = (MusicgenMelodyConfig if melody else MusicgenConfig)(
        text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict()
    )
    config.decoder_start_token_id = CODEBOOK_SIZE
    config.pad_token_id = CODEBOOK_SIZE
    return config


def build_random_checkpoint(
    directory: Path, size: Size = "tiny", stereo: bool = False, seed: int = 0, melody: bool = False
) -> Path:
    """Write a random MusicGen checkpoint in the hub layout to ``directory`` and return it.

    ``melody`` builds a MusicGen-Melody checkpoint. Its processor cannot be saved here (the melody feature
    extractor needs torchaudio, which has no build for this torch), so it gets the tokenizer files only; the
    engine computes the chroma itself (``engine.musicgen.chroma``) and reads nothing else.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size=200)
    config = _configs(size, stereo, text_vocab=len(tokenizer), melody=melody)
    torch.manual_seed(seed)
    model_class: Any = MusicgenMelodyForConditionalGeneration if melody else MusicgenForConditionalGeneration
    model = model_class(config)
    # EnCodec's codebooks are buffers that start at zero (training fills them); left so, every code decodes to
    # the same vector and the audio would not depend on what was generated.
    quantizer: Any = model.audio_encoder.quantizer
    with torch.no_grad():
        for layer in quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
        if melody:
            # Initialised like every linear layer (std 0.02), the chroma projection is drowned by the unit
            # positional embeddings of the prefix and a tune would not change a single greedy code: scaled
            # up, the tune steers the decoder, so tests can tell a melody request from a text-only one.
            model.audio_enc_to_dec_proj.weight.mul_(MELODY_PROJECTION_GAIN)
    model.generation_config = GenerationConfig(
        do_sample=True,
        guidance_scale=3.0,
        top_k=250,
        max_length=1500,
        decoder_start_token_id=CODEBOOK_SIZE,
        pad_token_id=CODEBOOK_SIZE,
        bos_token_id=CODEBOOK_SIZE,
    )
    model.save_pretrained(directory)
    if melody:
        tokenizer.save_pretrained(directory)
    else:
        feature_extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE)
        MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m engine.musicgen.checkpoints",
        description="Write a randomly initialised MusicGen checkpoint in the hub layout (for tests and "
        "examples: it loads and generates like a real one, but its audio is noise).",
    )
    parser.add_argument("directory", type=Path, help="where to write it (created if missing)")
    parser.add_argument("--size", choices=sorted(_SIZES), default="tiny", help="tiny (MBs) or small (GBs)")
    parser.add_argument("--stereo", action="store_true", help="two channels")
    parser.add_argument("--melody", action="store_true", help="a MusicGen-Melody checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    transformers.utils.logging.set_verbosity_error()  # its notes on the random configs are not for users
    transformers.utils.logging.disable_progress_bar()
    directory = build_random_checkpoint(
        args.directory, size=args.size, stereo=args.stereo, seed=args.seed, melody=args.melody
    )
    print(directory.resolve())


if __name__ == "__main__":
    main()
