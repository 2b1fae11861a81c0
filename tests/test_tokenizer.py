"""SentencePiece tokenizer: round trip, fixed specials, determinism, word grouping."""

from jointcap.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

CAPTIONS = [
    f"this bird has a {c} crown and {w} striped wings" for c in ("red", "blue", "green") for w in ("black", "white")
] * 30


def test_round_trip_and_specials(tmp_path) -> None:
    tok = Tokenizer.train(CAPTIONS, vocab_size=200)
    ids = tok.encode(CAPTIONS[0], max_len=80)
    assert ids[0] == BOS_ID and EOS_ID in ids and ids[-1] == PAD_ID and len(ids) == 80
    assert tok.decode(ids) == CAPTIONS[0]
    tok.save(tmp_path / "t.model")
    again = Tokenizer.load(tmp_path / "t.model")
    assert again.decode(ids) == CAPTIONS[0]


def test_truncation_keeps_eos() -> None:
    tok = Tokenizer.train(CAPTIONS, vocab_size=200)
    ids = tok.encode(CAPTIONS[0], max_len=4)
    assert len(ids) == 4 and ids[0] == BOS_ID and ids[-1] == EOS_ID


def test_training_is_deterministic() -> None:
    assert Tokenizer.train(CAPTIONS, 200).model_proto == Tokenizer.train(CAPTIONS, 200).model_proto


def test_word_steps_group_pieces() -> None:
    tok = Tokenizer.train(CAPTIONS, vocab_size=200)
    ids = tok.encode("this bird has a red crown", 80)[1:]
    words = [w for w, _ in tok.word_steps(ids)]
    assert words == ["this", "bird", "has", "a", "red", "crown"]


def test_default_tokenizer_keeps_words_whole_on_a_small_vocabulary() -> None:
    """A corpus of few distinct words must give word-sized pieces, not characters."""
    import random

    rng = random.Random(0)
    colours = ["red", "blue", "yellow", "green", "purple", "orange", "grey", "brown"]
    parts = ["head", "crown", "wings", "belly", "tail", "beak"]
    caps = [
        f"this bird has a {rng.choice(colours)} {rng.choice(parts)} and a {rng.choice(colours)} {rng.choice(parts)}"
        for _ in range(3000)
    ]
    tok = Tokenizer.train(caps, vocab_size=1000)
    pieces = tok.sp.encode(caps[0], out_type=str)
    assert len(pieces) == len(caps[0].split()), pieces
