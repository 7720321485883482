# The durable-agent worker image (see docker-compose.temporal.yml).
FROM python:3.12-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY durable_agent ./durable_agent
COPY workflows ./workflows
COPY activities ./activities
COPY worker.py starter.py agents.toml ./
RUN pip install --no-cache-dir .
RUN useradd --create-home agent && mkdir -p /var/lib/durable-agent && chown agent /var/lib/durable-agent
USER agent
CMD ["python", "worker.py"]
