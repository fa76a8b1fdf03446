# bulwark's container image: built on Debian 12, run FROM scratch with only what the binary
# needs (distroless-like): the binary, the shared libraries ldd names and the dynamic loader, the
# CA bundle, a passwd/group entry for the non-root user 65532, /tmp and a default config.
# No shell, no package manager: nothing for an intruder to use, and about 16 MB (3 of them the
# iptables of transparent mode's init container).
#
#   scripts/build-image.sh    builds it with docker or podman, offline too (README "Container image")
#   scripts/test-image.sh     builds it, runs its bulwark from the image's root and asks /healthz
#
# Plain Dockerfile syntax only (no BuildKit extensions), so `podman build` reads it the same way.

FROM debian:12 AS build
# ca-certificates: the bundle copied into the image below. apt's errors go to stderr; its
# progress, hundreds of lines, nowhere.
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential cmake pkg-config libuv1-dev node-llhttp libssl-dev libyaml-cpp-dev \
      prometheus-cpp-dev libre2-dev ca-certificates iptables >/dev/null && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBULWARK_TESTS=OFF \
 && cmake --build build -j"$(nproc)" --target bulwark \
 && strip build/bulwark

# The final image's root, assembled in /rootfs. The libraries are those the binaries are linked
# against, as ldd resolves them (including the dynamic loader, at the path the binary names),
# copied as files: no symbolic links to dangle. ldd prints "not found" for a missing one, which
# fails the build here rather than the container at start. The iptables binaries (nft and
# legacy, with their extensions) are for `bulwark iptables`, the init container of transparent
# mode, which runs this image too.
RUN set -eu; \
    bins="build/bulwark /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi"; \
    if ldd $bins | grep 'not found'; then exit 1; fi; \
    mkdir -p /rootfs/usr/local/bin /rootfs/usr/sbin /rootfs/etc/ssl/certs /rootfs/tmp; \
    cp build/bulwark /rootfs/usr/local/bin/bulwark; \
    cp /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /rootfs/usr/sbin/; \
    for t in iptables ip6tables; do \
      for op in restore save; do \
        ln -s xtables-nft-multi "/rootfs/usr/sbin/$t-$op"; \
        ln -s xtables-legacy-multi "/rootfs/usr/sbin/$t-legacy-$op"; \
      done; \
    done; \
    cp -r --parents /usr/lib/x86_64-linux-gnu/xtables /rootfs/ 2>/dev/null \
      || cp -r --parents "$(dirname "$(readlink -f /usr/lib/*/xtables/libxt_REDIRECT.so)")" /rootfs/; \
    ldd $bins | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*[^:]$/ { print $1 }' \
      | sort -u \
      | while read -r lib; do cp -L --parents "$lib" /rootfs/; done; \
    cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
      > /rootfs/etc/passwd; \
    printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group; \
    echo 'hosts: files dns' > /rootfs/etc/nsswitch.conf; \
    chmod 1777 /rootfs/tmp

FROM scratch
COPY --from=build /rootfs/ /
COPY config/examples/container.yaml /etc/bulwark/bulwark.yaml
# A cluster with `tls: {}` verifies against the system store, which OpenSSL looks for at
# /usr/lib/ssl/cert.pem unless SSL_CERT_FILE says otherwise; this image has only the bundle.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# `bulwark iptables` runs iptables-restore from here (there is no shell to find it otherwise).
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin
USER 65532:65532
# The inbound listener and the probes listener; admin (9901) is on loopback, reachable only
# from inside the pod.
EXPOSE 8080 9902
ENTRYPOINT ["/usr/local/bin/bulwark"]
CMD ["--config", "/etc/bulwark/bulwark.yaml"]
