"""Build randomly-initialised MusicGen checkpoints on disk, in the Hugging Face hub layout.

Nothing can download real weights in CI, so tests and benchmarks build checkpoints with the same files a hub
snapshot has (config.json, generation_config.json, model.safetensors, tokenizer files, preprocessor config)
and load them through the very code path a real checkpoint takes.

``tiny`` is a few-megabyte model for the test suite; ``small`` is the real musicgen-small architecture
(~590 M parameters, random weights) for benchmarks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
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

_TOKENIZER_CORPUS = [
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
]


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
    tokenizer.train_from_iterator(_TOKENIZER_CORPUS * 20, trainer=trainer)
    return T5Tokenizer(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
    )


def _configs(size: Size, stereo: bool, text_vocab: int, melody: bool) -> PreTrainedConfig:
    channels = 2 if stereo else 1
    decoder_class = MusicgenMelodyDecoderConfig if melody else MusicgenDecoderConfig
    if size == "tiny":
        text = T5Config(
            vocab_size=text_vocab,
            d_model=32,
            d_kv=16,
            d_ff=64,
            num_layers=2,
            num_heads=2,
            pad_token_id=0,
            eos_token_id=1,
        )
        audio = EncodecConfig(
            sampling_rate=SAMPLE_RATE,
            audio_channels=1,
            codebook_size=CODEBOOK_SIZE,
            target_bandwidths=[2.2],
            upsampling_ratios=[8, 5, 4, 4],
            hidden_size=16,
            num_filters=4,
            num_lstm_layers=1,
            use_causal_conv=False,
            use_conv_shortcut=False,
        )
        decoder = decoder_class(
            vocab_size=CODEBOOK_SIZE,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            ffn_dim=64,
            num_codebooks=4 * channels,
            audio_channels=channels,
            max_position_embeddings=2048,
        )
    else:
        # The published facebook/musicgen-small configuration (stereo-small doubles the codebooks).
        text = T5Config(
            vocab_size=text_vocab,
            d_model=768,
            d_kv=64,
            d_ff=3072,
            num_layers=12,
            num_heads=12,
            pad_token_id=0,
            eos_token_id=1,
        )
        audio = EncodecConfig(
            sampling_rate=SAMPLE_RATE,
            audio_channels=1,
            codebook_size=CODEBOOK_SIZE,
            target_bandwidths=[2.2],
            upsampling_ratios=[8, 5, 4, 4],
            hidden_size=128,
            num_filters=64,
            num_lstm_layers=2,
            use_causal_conv=False,
            use_conv_shortcut=False,
        )
        decoder = decoder_class(
            vocab_size=CODEBOOK_SIZE,
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            ffn_dim=4096,
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
    engine conditions on text alone and reads nothing else.
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
