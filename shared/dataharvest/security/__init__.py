"""Security controls: database roles per service, field-level encryption of personal data,
verified TLS and IAM authentication to the database."""
