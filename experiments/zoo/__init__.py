"""The built-in models and data sets, and the registry that names them and Keras's pieces.

A user's own factory, loss, metric or callback is named by import path instead; nothing here
has to change to use it.

May import: keras, NumPy, scikit-learn (its bundled data), `experiments.errors`.
"""
