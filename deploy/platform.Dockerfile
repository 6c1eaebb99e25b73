# The platform image: static binaries on an empty filesystem, nothing pulled.
# Built by deploy/build-images from binaries compiled on this machine.
FROM scratch
COPY --chown=10001:10001 data/ /data/
COPY platform-svc health-probe /usr/local/bin/
USER 10001:10001
WORKDIR /data
EXPOSE 7443 7444 7445 7446
ENTRYPOINT ["/usr/local/bin/platform-svc", "serve"]
CMD ["--config", "/etc/consent/platform.toml"]
