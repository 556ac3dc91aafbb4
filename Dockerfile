# The byu flow worker: serves the round1 / round2 / external / train deployments (`python -m flows.serve`)
# against PREFECT_API_URL. Built by docker-compose.yml (service byu-flows); CPU only.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BYU_DATA=/data

WORKDIR /app

# torch first, the CPU build from PyTorch's CPU index: from PyPI (or with monai first) pip pulls GBs of CUDA
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# then the package (its pin torch==2.13.0 is met by 2.13.0+cpu, so nothing is re-downloaded)
COPY pyproject.toml README.md ./
COPY byu ./byu
COPY flows ./flows
RUN pip install . && python -c "import byu, flows.serve, torch; print('byu ok, torch', torch.__version__)"

RUN useradd --create-home --uid 1000 byu && mkdir -p /data && chown byu:byu /data
USER byu
VOLUME ["/data"]

CMD ["python", "-m", "flows.serve"]
