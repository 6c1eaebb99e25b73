# The database of the replicated stack: Debian's PostgreSQL programs, libraries and share
# files copied from the build machine onto an empty file system, nothing pulled.
# Built by deploy/build-postgres-image.
FROM scratch
COPY root/ /
COPY --chown=999:999 home/ /var/lib/postgresql/
USER 999:999
ENV PGDATA=/var/lib/postgresql/data TZ=UTC
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/start-postgres"]
