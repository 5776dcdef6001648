# snakepool node image: the router, the lane workers and Flower all run from it; the
# command comes from compose.yaml (or `docker run ... snakepool worker --lane v3`).
FROM python:3.11-slim

# LITELLM_LOCAL_MODEL_COST_MAP: litellm (preloaded with DSPy) must not fetch its model
# cost map over the network at import; every template start would wait on it.
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True

WORKDIR /build
COPY pyproject.toml README.md ./
COPY config ./config
COPY pool ./pool
COPY sessions ./sessions
COPY tasks ./tasks
COPY snakepool ./snakepool

# Install (not editable), then compile every installed module: the interpreters run as a
# user who cannot write __pycache__ into site-packages, and without .pyc files each
# template start pays the full compile of DSPy and litellm again.
RUN pip install --no-cache-dir '.[dspy]' \
    && python -m compileall -q -j 0 \
        "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && cd / && rm -rf /build

# Not root. A home directory: DSPy keeps its cache in ~/.dspy_cache.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin snakepool
USER snakepool
WORKDIR /home/snakepool

CMD ["snakepool", "--help"]
