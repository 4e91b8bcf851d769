"""A Keras model as an MLflow logged model that loads anywhere with the user code it needs.

`log`: the logged model (Keras flavor, signature, input example, SavedModel), linked to the
run's params and metrics; `user_code`: the custom objects a model uses, and their code copied
into the model; `loader`: the pyfunc loader copied into each model (standard library only);
`plugin`: the MLflow plugin that gives `mlflow.keras.load_model` the recorded user code.

May import: mlflow, keras (when a model is saved or loaded), `tracking.mlflow`.
"""
