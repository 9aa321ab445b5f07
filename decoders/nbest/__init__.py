"""N-best lists: file formats, LM rescoring, ranking (1-best under weights) and the tuning export.

One job per module:

* :mod:`decoders.nbest.formats` — readers (one dispatch, :func:`read_nbest` / :func:`iter_nbest`,
  :func:`register_reader` for more formats) and writers: JSONL, TSV, Kaldi text;
* :mod:`decoders.nbest.rescore` — scoring with LMs (a pure function of a batch, and a bounded-memory
  stream of batches);
* :mod:`decoders.nbest.rank` — weights (through :mod:`fusion.weights`) -> 1-best, ties, error rates,
  and :func:`to_tuning_problem`;
* :mod:`decoders.nbest.problem_stream` — :func:`stream_tuning_problem`: a stream of lists read in
  bounded batches into one compact tuning problem (what ``tune`` reads).

Every name is importable from ``decoders.nbest`` as before.
"""

from decoders.hypothesis import iter_nbest_jsonl, read_nbest_jsonl, write_nbest_jsonl
from decoders.nbest.formats import (
    KALDI_NON_WORDS,
    KALDI_UNK,
    NBestFormat,
    NBestReader,
    format_nbest_tsv,
    iter_nbest,
    iter_nbest_tsv,
    onebest_line,
    parse_score_scale,
    read_kaldi_nbest,
    read_nbest,
    read_nbest_tsv,
    read_refs,
    reader_formats,
    register_reader,
    scale_scores,
    write_kaldi_nbest,
    write_nbest_tsv,
    write_onebest,
)
from decoders.nbest.problem_stream import ComponentTracker, stream_tuning_problem
from decoders.nbest.rank import (
    WeightsLike,
    apply_weights,
    best_indices,
    count_ties,
    list_context,
    onebest_error_counts,
    onebest_error_rates,
    rates_of_counts,
    to_tuning_problem,
    weights_per_list,
)
from decoders.nbest.rescore import (
    WORDS,
    RescoreStats,
    TextScores,
    flat_texts,
    iter_batches,
    merge_stats,
    rescore,
    rescore_batch,
    rescore_stream,
    rescore_with_stats,
    score_hypotheses,
    score_texts,
    summarize,
)

__all__ = [
    "KALDI_NON_WORDS",
    "KALDI_UNK",
    "WORDS",
    "ComponentTracker",
    "NBestFormat",
    "NBestReader",
    "RescoreStats",
    "TextScores",
    "WeightsLike",
    "apply_weights",
    "best_indices",
    "count_ties",
    "flat_texts",
    "format_nbest_tsv",
    "iter_batches",
    "iter_nbest",
    "iter_nbest_jsonl",
    "iter_nbest_tsv",
    "list_context",
    "merge_stats",
    "onebest_error_counts",
    "onebest_error_rates",
    "onebest_line",
    "parse_score_scale",
    "rates_of_counts",
    "read_kaldi_nbest",
    "read_nbest",
    "read_nbest_jsonl",
    "read_nbest_tsv",
    "read_refs",
    "reader_formats",
    "register_reader",
    "rescore",
    "rescore_batch",
    "rescore_stream",
    "rescore_with_stats",
    "scale_scores",
    "score_hypotheses",
    "score_texts",
    "stream_tuning_problem",
    "summarize",
    "to_tuning_problem",
    "weights_per_list",
    "write_kaldi_nbest",
    "write_nbest_jsonl",
    "write_nbest_tsv",
    "write_onebest",
]
