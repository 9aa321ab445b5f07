"""CTC prefix beam search with shallow fusion of any LM (see :mod:`decoders.ctc.decoder`).

The public API: ``from decoders.ctc import CTCDecoder, CTCOptions``.
"""

from decoders.ctc.decoder import CTCDecoder, CTCDecoderSpec
from decoders.ctc.inputs import as_logprobs
from decoders.ctc.options import CTCOptions
from decoders.ctc.output import CTCHypothesis
from decoders.ctc.search import token_candidates
from decoders.ctc.stream import CTCStream
from decoders.ctc.vocabulary import SPM_BOUNDARY, CTCVocab
from decoders.ctc.weighting import FIXED_COMPONENTS, ctc_components
from fusion.abilities import LMSpec

__all__ = [
    "FIXED_COMPONENTS",
    "SPM_BOUNDARY",
    "CTCDecoder",
    "CTCDecoderSpec",
    "CTCHypothesis",
    "CTCOptions",
    "CTCStream",
    "CTCVocab",
    "LMSpec",
    "as_logprobs",
    "ctc_components",
    "token_candidates",
]
