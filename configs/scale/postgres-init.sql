-- MLflow's backend store: its own database beside the service's (docker-compose.scale.yml).
CREATE DATABASE mlflow OWNER oncotriage;
