# The partner image: one binary for every partner profile; the profile is mounted.
# Built by deploy/build-images from binaries compiled on this machine.
FROM scratch
COPY --chown=10001:10001 data/ /data/
COPY partner-svc health-probe /usr/local/bin/
USER 10001:10001
WORKDIR /data
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/partner-svc"]
