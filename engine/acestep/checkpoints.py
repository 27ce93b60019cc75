"""Build randomly initialised ACE-Step 1.5 checkpoints on disk, in the diffusers layout.

Nothing can download real weights in CI, so tests and benchmarks build a pipeline with the same components a
hub snapshot has (model_index.json plus one folder per component: vae, text_encoder, tokenizer, transformer,
condition_encoder, scheduler, optionally audio_tokenizer and audio_token_detokenizer) and load it through the
very ``AceStepPipeline.from_pretrained`` path a real checkpoint takes. The tokenizer is a byte-level BPE
trained in-process, with ``<|endoftext|>`` as end and padding token like Qwen3's.

``tiny`` is a one-megabyte pipeline for the test suite. ``turbo`` has the DiT of the published ACE-Step 1.5
turbo checkpoint (hidden 2048, intermediate 6144, 24 layers, 16 heads, 8 KV heads, head_dim 128, window
128) for benchmarks; ``layers`` reduces its depth to fit a small machine. The other components stay small at
every size: a denoising step runs the DiT alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

Size = Literal["tiny", "turbo"]

END_OF_TEXT = "<|endoftext|>"
# The condition encoder (lyrics, timbre) stays small at every size: it runs once per song, at admission, and
# the DiT projects its output up to its own width.
CONDITION_WIDTH = 32
# The attention shape of every component that runs once per song (condition and audio-token encoders).
_SMALL_ATTENTION: dict[str, int] = {
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "sliding_window": 16,
}

SAMPLE_PROMPTS = (
    "dreamy synth pop with airy female vocals",
    "hard rock anthem, distorted guitars, pounding drums",
    "acoustic folk ballad with fingerpicked guitar",
    "lofi hip hop beat with warm piano and vinyl crackle",
    "cinematic orchestral score with strings and brass",
)
SAMPLE_LYRICS = (
    "[verse]\nCity lights are fading slow\nI keep walking, nowhere to go",
    "[chorus]\nSing it loud, sing it high\nWe are burning through the night",
    "[bridge]\nHold on, hold on\n[outro]\nLa la la",
)


def _train_tokenizer(vocab_size: int) -> object:
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # its progress output goes to stdout, which a stdio MCP server must keep clean
    )
    tokenizer.train_from_iterator((SAMPLE_PROMPTS + SAMPLE_LYRICS) * 10, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT)


@dataclass(frozen=True)
class _Dimensions:
    dit_width: int
    dit_ff: int
    dit_layers: int
    dit_heads: int
    dit_kv_heads: int
    head_dim: int
    sliding_window: int
    acoustic: int  # latent channels (VAE decoder input, DiT output, timbre input)
    text_width: int  # the text encoder's hidden size


_SIZES: dict[Size, _Dimensions] = {
    "tiny": _Dimensions(32, 64, 2, 2, 1, 16, 16, 4, 32),
    # The published turbo DiT (ACE-Step/acestep-v15-turbo transformer/config.json).
    "turbo": _Dimensions(2048, 6144, 24, 16, 8, 128, 128, 64, 32),
}


def dit(
    size: Size, *, layers: int | None = None, turbo: bool = True, encoder_width: int = CONDITION_WIDTH
) -> Any:
    """A randomly initialised ``AceStepTransformer1DModel`` of ``size`` (on the meta device under
    ``torch.device("meta")``, for counting). ``encoder_width``: the condition encoder's output width (2048 in
    the published checkpoints)."""
    from diffusers import AceStepTransformer1DModel

    dims = _SIZES[size]
    return AceStepTransformer1DModel(
        hidden_size=dims.dit_width,
        intermediate_size=dims.dit_ff,
        num_hidden_layers=layers or dims.dit_layers,
        num_attention_heads=dims.dit_heads,
        num_key_value_heads=dims.dit_kv_heads,
        head_dim=dims.head_dim,
        in_channels=3 * dims.acoustic,  # context (source latents + chunk mask) and the noisy latents
        audio_acoustic_hidden_dim=dims.acoustic,
        patch_size=2,
        sliding_window=dims.sliding_window,
        encoder_hidden_size=encoder_width,
        is_turbo=turbo,
        model_version="turbo" if turbo else "base",
    )


def build_random_checkpoint(
    directory: Path,
    size: Size = "tiny",
    *,
    turbo: bool = True,
    audio_tokenizer: bool = False,
    layers: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a random ACE-Step pipeline in the diffusers layout to ``directory`` and return it.

    ``turbo`` marks the DiT guidance-distilled (no CFG, 8 steps) like the turbo checkpoints; otherwise it is a
    base checkpoint that uses CFG. ``audio_tokenizer`` adds the optional 5 Hz audio tokenizer/detokenizer that
    the cover task needs. ``layers`` overrides the DiT depth.
    """
    from diffusers import (
        AceStepConditionEncoder,
        AceStepPipeline,
        AutoencoderOobleck,
        FlowMatchEulerDiscreteScheduler,
    )
    from transformers import Qwen3Config, Qwen3Model

    dims = _SIZES[size]
    torch.manual_seed(seed)
    tokenizer = _train_tokenizer(vocab_size=300)
    text_encoder = Qwen3Model(
        Qwen3Config(
            vocab_size=len(tokenizer),  # type: ignore[arg-type]
            hidden_size=dims.text_width,
            intermediate_size=2 * dims.text_width,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=4096,
        )
    )
    condition_encoder: Any = AceStepConditionEncoder(
        hidden_size=CONDITION_WIDTH,
        intermediate_size=64,
        text_hidden_dim=dims.text_width,
        timbre_hidden_dim=dims.acoustic,
        num_lyric_encoder_hidden_layers=1,
        num_timbre_encoder_hidden_layers=1,
        **_SMALL_ATTENTION,
    )
    # A silence latent that is not all zeros, so that context latents carry information in tests.
    condition_encoder.silence_latent.normal_(0.0, 0.1)
    transformer = dit(size, layers=layers, turbo=turbo)
    # 48 kHz stereo, 1920 samples per latent frame (25 latents per second) like the real VAE. The encoder
    # emits mean and scale, so it is twice as wide as the decoder's input; repaint and cover encode audio.
    vae = AutoencoderOobleck(
        encoder_hidden_size=2 * dims.acoustic,
        downsampling_ratios=[2, 4, 4, 6, 10],
        channel_multiples=[1, 1, 1, 1, 1],
        decoder_channels=2,
        decoder_input_channels=dims.acoustic,
        audio_channels=2,
        sampling_rate=48_000,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    optional: dict[str, object] = {}
    if audio_tokenizer:
        from diffusers.pipelines.ace_step.modeling_ace_step import (
            AceStepAudioTokenDetokenizer,
            AceStepAudioTokenizer,
        )

        shared = dict(
            hidden_size=32,
            intermediate_size=64,
            audio_acoustic_hidden_dim=dims.acoustic,
            pool_window_size=5,
            num_attention_pooler_hidden_layers=1,
            **_SMALL_ATTENTION,
        )
        optional["audio_tokenizer"] = AceStepAudioTokenizer(fsq_dim=32, fsq_input_levels=[8, 5, 5], **shared)
        optional["audio_token_detokenizer"] = AceStepAudioTokenDetokenizer(**shared)
    pipeline: Any = AceStepPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=scheduler,
        **optional,
    )
    directory.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(directory)
    return directory
