# One image for every role: `recomengine api`, `worker`, `scheduler` and `migrate`.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY api ./api
COPY cli ./cli
COPY domain ./domain
COPY migrations ./migrations
COPY scheduler ./scheduler
COPY store ./store
COPY workers ./workers
RUN pip install -c constraints.txt . && useradd --system --uid 10001 recomengine
USER recomengine
EXPOSE 5008
CMD ["recomengine", "api"]
