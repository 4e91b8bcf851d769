-- Optuna and MLflow both keep an alembic_version table: one database each.
CREATE DATABASE optuna OWNER harness;
