# CPU image for byoserve: a SageMaker bring-your-own-container model server.
#
#   docker build -t byoserve .                  # anywhere with access to PyPI and download.pytorch.org
#   docker run -p 8080:8080 -v $PWD/model:/opt/ml/model:ro byoserve serve
#
# Where download.pytorch.org cannot be reached but a CPU wheel of torch is on disk (this is how the
# project's own machines build it; see docs/container.md):
#
#   podman build -v /opt/wheels:/wheels:ro --build-arg TORCH_FIND_LINKS=/wheels -t byoserve .
#
# The `torchvision` variant (`--build-arg VARIANT=torchvision`; `make build-torchvision`) swaps
# torch 2.13.0 for torch 2.14.1 + torchvision 0.29.1 and adds TorchServe's Python package `ts`
# (torchserve 0.12.0; its Java frontend is never started) and captum (which ts's vision and text
# handlers import), so handlers that subclass ts.torch_handler.* run unchanged:
#
#   docker build --build-arg VARIANT=torchvision -t byoserve:torchvision .
#
# That takes the CPU builds from download.pytorch.org. The project's machines cannot reach it; their
# pip indexes on disk hold the CUDA build of torch 2.14.1 (and its nvidia-* wheels), which also runs
# on CPU, and `make build-torchvision` mounts those indexes and names them in TORCH_INDEX_URL.
#
# Three stages: `requirements` lists the dependencies, `builder` installs them into the venv
# /opt/venv, and the final stage copies that venv and the code. The dependency layer depends only
# on the requirement list derived from pyproject.toml and on constraints.txt, so a change to the
# code reuses it.

# The requirement list is read from pyproject.toml ([project.dependencies] plus the `torch` extra),
# so it is written down once. Only the derived list reaches the dependency layer, so an edit to
# another part of pyproject.toml (tool settings, version) does not reinstall the dependencies.
FROM python:3.11-slim AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + p["optional-dependencies"]["torch"]))' > requirements.txt


FROM python:3.11-slim AS builder

# Where the CPU build of torch comes from: indexes searched besides PyPI (space-separated; the
# default is what a user outside wants) or, when TORCH_FIND_LINKS is set, directories of wheels
# visible to RUN (e.g. mounted with `podman build -v`). A wheel on PyPI wins over the same one in a
# find-links directory, but not over one in another index: local copies of PyPI's wheels (the
# variant's) must come as an index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
# Empty: the `torch` extra of pyproject.toml. `torchvision`: VISION_PACKAGES in its place.
ARG VARIANT=
ARG VISION_PACKAGES="torch==2.14.1 torchvision==0.29.1 torchserve==0.12.0 captum==0.9.0"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# `python3 -m venv` works on the official image (python in /usr/local/bin) and on a Debian-packaged
# python (/usr/bin, externally managed), so the same file builds on both.
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build
COPY constraints.txt ./
COPY --from=requirements /src/requirements.txt ./

# constraints.txt pins every version (torch==2.13.0+cpu, so no CUDA build can slip in). The
# torchvision variant drops that pin and the `torch` extra's line; its packages are pinned above.
RUN set -eu; \
    if [ -n "$TORCH_FIND_LINKS" ]; then torch_source="--find-links $TORCH_FIND_LINKS"; \
    else torch_source=""; \
        for index in $TORCH_INDEX_URL; do torch_source="$torch_source --extra-index-url $index"; done; \
    fi; \
    case "$VARIANT" in \
        "") extra="" ;; \
        torchvision) extra="$VISION_PACKAGES"; \
            grep -v -i '^torch==' requirements.txt > requirements-base.txt; \
            mv requirements-base.txt requirements.txt; \
            grep -v -i '^torch==' constraints.txt > constraints-base.txt; \
            mv constraints-base.txt constraints.txt ;; \
        *) echo "unknown VARIANT=$VARIANT (empty or torchvision)" >&2; exit 2 ;; \
    esac; \
    pip install --upgrade pip 'setuptools>=68'; \
    pip install -c constraints.txt $torch_source -r requirements.txt $extra; \
    pip check


FROM python:3.11-slim

LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
# SageMaker multi-model endpoints: the server answers POST/GET/DELETE /models and
# /models/<name>/invoke when started with SAGEMAKER_MULTI_MODEL=true.
LABEL com.amazonaws.sagemaker.capabilities.multi-models=true

# An unprivileged account for those who opt in with `--build-arg RUN_AS=model` (or `docker run
# --user 1000:1000`). SageMaker runs containers as root, so root stays the default.
ARG RUN_AS=root
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /opt/program \
        --shell /usr/sbin/nologin model

COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1

WORKDIR /opt/program
COPY pyproject.toml ./
COPY serve/ serve/
COPY handlers/ handlers/
COPY deploy/ deploy/
COPY container/ container/
# setuptools is already in the venv, so the code installs without a build environment or network.
RUN pip install --no-cache-dir --no-deps --no-build-isolation --disable-pip-version-check . \
    && rm -rf build ./*.egg-info

USER ${RUN_AS}
EXPOSE 8080

# SageMaker starts the container as `docker run IMAGE serve` (or `train`); exec form, so the
# server is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["/opt/venv/bin/python", "/opt/program/container/serve"]
CMD ["serve"]
