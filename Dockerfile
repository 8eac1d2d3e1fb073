FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY server server
COPY client client
RUN pip install --no-cache-dir '.[server,fast]' && mkdir /data && chown nobody /data
USER nobody
EXPOSE 8000
VOLUME /data
# Off loopback the server needs keys: set GRADSERVE_API_KEYS=user:key,...
CMD ["gradserve", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
