"""The lab: what turns the library into experiments and a book.

It depends on the core (models, data, training, evaluation) and the core never on it:

==========  ============================================================================
study       variants x seeds trained and scored in one call, with crossed-bootstrap intervals
notebooks   papermill execution of the chapters, each cached on what it depends on
sweep       one notebook over a YAML grid of typed points (local processes or Dask)
report      named result tables, figures and audio players the chapters share
export      a checkpoint as ONNX for the in-browser listening room
book        ``sgn book``: execute the chapters, fetch the pinned JavaScript, build the book
==========  ============================================================================
"""
