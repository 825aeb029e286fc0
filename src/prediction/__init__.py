"""Use trained models on new documents: ``python -m src.predict`` (labels and class
probabilities from classifiers, per-document loss and perplexity from language models) and the
classifier's evaluation behind ``python -m src.eval``.

``inputs`` reads the documents (CSV, text lines, standard input), ``predictors`` turns a
checkpoint or an exported ONNX classifier into numbers, ``run`` writes the output file, and
``classifier_eval`` scores a classifier on a labelled split.
"""
