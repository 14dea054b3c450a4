package dev.streamgate.client;

import io.grpc.ChannelCredentials;
import io.grpc.TlsChannelCredentials;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;

/**
 * TLS settings of a client: PEM files of the certificates to trust ({@code null}: the JDK's
 * roots) and of the client's certificate and key, for a gateway that requires mutual TLS.
 */
public record TlsOptions(Path caFile, Path certFile, Path keyFile) {
  public TlsOptions {
    if ((certFile == null) != (keyFile == null)) {
      throw new IllegalArgumentException("a client certificate needs both certFile and keyFile");
    }
  }

  /** TLS trusting the JDK's roots. */
  public static TlsOptions systemRoots() {
    return new TlsOptions(null, null, null);
  }

  /** TLS trusting the certificates in {@code caFile}. */
  public static TlsOptions trusting(Path caFile) {
    return new TlsOptions(caFile, null, null);
  }

  /** The same, presenting this client certificate. */
  public TlsOptions withClientCertificate(Path certFile, Path keyFile) {
    return new TlsOptions(caFile, certFile, keyFile);
  }

  ChannelCredentials credentials() {
    TlsChannelCredentials.Builder builder = TlsChannelCredentials.newBuilder();
    try {
      if (caFile != null) {
        builder.trustManager(caFile.toFile());
      }
      if (certFile != null) {
        builder.keyManager(certFile.toFile(), keyFile.toFile());
      }
    } catch (IOException e) {
      throw new UncheckedIOException("reading the TLS files", e);
    }
    return builder.build();
  }
}
