# The engine's interpreter is compiled with mypyc (setup.py) in a stage that has a C
# compiler; the image installs the wheel it builds.
FROM python:3.11 AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY engine engine
COPY server server
COPY client client
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/gradserve-*.whl)[server,fast]" && rm -r /wheels \
    && python -c "import gradserve.engine as e; assert e.NATIVE == 'mypyc', e.NATIVE" \
    && mkdir /data && chown nobody /data
USER nobody
EXPOSE 8000
VOLUME /data
# Off loopback the server needs keys: set GRADSERVE_API_KEYS=user:key,...
CMD ["gradserve", "serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
