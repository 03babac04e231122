package org.cnngraph.server;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;

/**
 * Starts an embedded Neo4j 5.26 server for cnngraph: Bolt and HTTP (with Neo4j Browser at
 * /browser/) on loopback, a persistent store under --home, heap from the JVM flags and page
 * cache from --pagecache. The password, when auth is on, comes from the environment variable
 * NEO4J_PASSWORD so that it never shows in the process list.
 *
 * <p>Options: --home DIR, --host ADDR, --bolt-port N, --http-port N, --auth true|false,
 * --pagecache SIZE (for example 512m), --conf key=value (any neo4j.conf setting, repeatable),
 * --ready-fd N (an inherited pipe: the ready line goes there too, so that whoever started this
 * process reads its readiness from its own child, never from a log file another start shares).
 *
 * <p>Cross-origin HTTP is limited to the server's own origin (http://HOST:HTTP-PORT), so a web
 * page elsewhere cannot read answers of the HTTP API. Neo4j 5.26 has no origin check for Bolt
 * over WebSocket: there, auth (on by default in cnngraph) is the protection.
 */
public final class Launcher {

  private Launcher() {}

  public static void main(String[] args) throws InterruptedException {
    Map<String, String> opts = new HashMap<>();
    Map<String, String> config = new HashMap<>();
    for (int i = 0; i + 1 < args.length; i += 2) {
      String key = args[i];
      String value = args[i + 1];
      if (!key.startsWith("--")) {
        fail("unexpected argument '" + key + "'; options are --name value pairs");
      }
      if (key.equals("--conf")) {
        int eq = value.indexOf('=');
        if (eq < 1) {
          fail("--conf takes key=value, got '" + value + "'");
        }
        config.put(value.substring(0, eq), value.substring(eq + 1));
      } else {
        opts.put(key.substring(2), value);
      }
    }
    if (args.length % 2 != 0) {
      fail("option '" + args[args.length - 1] + "' has no value");
    }

    Path home = Path.of(opts.getOrDefault("home", "neo4j-home")).toAbsolutePath();
    String host = opts.getOrDefault("host", "127.0.0.1");
    String bolt = host + ":" + opts.getOrDefault("bolt-port", "7687");
    String http = host + ":" + opts.getOrDefault("http-port", "7474");
    boolean auth = Boolean.parseBoolean(opts.getOrDefault("auth", "false"));
    String password = System.getenv("NEO4J_PASSWORD");
    if (auth && (password == null || password.length() < 8)) {
      fail("auth is on but NEO4J_PASSWORD is unset or shorter than 8 characters");
    }

    Map<String, String> raw = new HashMap<>();
    raw.put("server.bolt.enabled", "true");
    raw.put("server.bolt.listen_address", bolt);
    raw.put("server.bolt.advertised_address", bolt);
    raw.put("server.http.enabled", "true");
    raw.put("server.http.listen_address", http);
    raw.put("server.http.advertised_address", http);
    raw.put("server.https.enabled", "false");
    raw.put("dbms.security.auth_enabled", Boolean.toString(auth));
    raw.put("server.memory.pagecache.size", opts.getOrDefault("pagecache", "512m"));
    raw.put("dbms.usage_report.enabled", "false");
    // No unbounded waits (docs/GRAPH.md): a transaction waits at most 90 s for a lock and runs at
    // most 15 min, so one left open by a stopped client (Ctrl-Z) cannot hold a model forever.
    // cnngraph's own transactions carry shorter timeouts of their own (cnngraph/loader/waits.py).
    raw.put("db.lock.acquisition.timeout", "90s");
    raw.put("db.transaction.timeout", "15m");
    raw.put("dbms.security.http_access_control_allow_origin", "http://" + http);
    // Neo4j Browser: cnngraph's pages under /cnngraph (web.BrowserPages): the opener that turns
    // "Connect result nodes" (autoComplete) off before Browser starts, so no settings frame follows
    // the login, and the guides and styles that 'cnngraph browse' writes; Browser fetches them
    // without credentials. Remote guides and styles only from this host (Browser 5.24 compares
    // host names, not ports), and no usage reports from Browser.
    raw.put("server.unmanaged_extension_classes", "org.cnngraph.server.web=/cnngraph");
    raw.put("dbms.security.http_auth_allowlist", "/,/browser.*,/cnngraph/.*");
    raw.put("browser.remote_content_hostname_whitelist", "http://" + host);
    raw.put("client.allow_telemetry", "false");
    org.cnngraph.server.web.BrowserPages.serveFrom(home.resolve("guides"));
    raw.putAll(config);

    long started = System.nanoTime();
    Path conf = writeConfig(home, raw);
    DatabaseManagementService service =
        new DatabaseManagementServiceBuilder(home).loadPropertiesFromFile(conf).build();
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  System.out.println("cnngraph-server: shutting down");
                  service.shutdown();
                  stopped.countDown();
                },
                "cnngraph-server-shutdown"));

    if (auth) {
      setPassword(service, password);
    }
    long millis = (System.nanoTime() - started) / 1_000_000;
    System.out.printf(
        "cnngraph-server: ready in %d ms, bolt://%s, http://%s/browser/, store %s, auth %s%n",
        millis, bolt, http, home, auth ? "on" : "off");
    System.out.flush();
    if (opts.containsKey("ready-fd")) {
      signalReady(opts.get("ready-fd"), bolt);
    }
    stopped.await();
  }

  /** Sets the password of the built-in user 'neo4j' and clears its change-required flag. */
  private static void setPassword(DatabaseManagementService service, String password) {
    GraphDatabaseService system = service.database("system");
    try {
      system.executeTransactionally(
          "ALTER USER neo4j SET PASSWORD $pw CHANGE NOT REQUIRED", Map.of("pw", password));
    } catch (RuntimeException e) {
      // The same password as before is refused by Neo4j; anything else is a real failure.
      if (!String.valueOf(e.getMessage()).contains("cannot be the same")) {
        throw e;
      }
    }
  }

  /** Writes one line to the inherited pipe --ready-fd and closes it (the starter then stops reading). */
  private static void signalReady(String fd, String bolt) {
    try (var out = Files.newOutputStream(Path.of("/dev/fd/" + Integer.parseInt(fd)))) {
      out.write(("cnngraph-server: ready, bolt://" + bolt + "\n").getBytes(StandardCharsets.UTF_8));
    } catch (IOException | NumberFormatException e) {
      // The starter gave up (its end is closed) or passed no pipe: the server runs on regardless.
      System.out.println("cnngraph-server: could not signal readiness on fd " + fd + ": " + e);
    }
  }

  /** Writes the settings as home/conf/neo4j.conf, so that the store's configuration is on disk. */
  private static Path writeConfig(Path home, Map<String, String> settings) {
    StringBuilder text = new StringBuilder("# Written by the cnngraph launcher at every start.\n");
    new TreeMap<>(settings).forEach((k, v) -> text.append(k).append('=').append(v).append('\n'));
    try {
      Path dir = Files.createDirectories(home.resolve("conf"));
      Path file = dir.resolve("neo4j.conf");
      Files.writeString(file, text.toString());
      return file;
    } catch (IOException e) {
      fail("cannot write the configuration under " + home + ": " + e.getMessage());
      throw new IllegalStateException(e);
    }
  }

  private static void fail(String message) {
    System.err.println("cnngraph-server: " + message);
    System.exit(2);
  }
}
