"""s1 data layer: tokenizer, chat format with loss masks, built-in task, readers, packing.

    from s1kernels.data import build_default_tokenizer, render_sample, make_rows, pack
"""
from s1kernels.data.format import ANSWER_START, THINK_START, prompt_text, render_rows, render_sample  # noqa: F401
from s1kernels.data.packing import IGNORE_INDEX, Packed, pack  # noqa: F401
from s1kernels.data.synthetic import check_answer, extract_answer, make_rows  # noqa: F401
from s1kernels.data.tokenizer import S1Tokenizer, build_default_tokenizer, real_vocab_size  # noqa: F401
