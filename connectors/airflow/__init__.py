"""Airflow 3 connector (REST API through apache-airflow-client)."""

from connectors.airflow.connector import AirflowConnector

__all__ = ["AirflowConnector"]
