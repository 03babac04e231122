import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.graphdb.Label;
import org.neo4j.graphdb.Node;
import org.neo4j.graphdb.Relationship;
import org.neo4j.graphdb.RelationshipType;
import org.neo4j.graphdb.TransientFailureException;
import org.neo4j.graphdb.Transaction;
import org.neo4j.io.ByteUnit;

/**
 * The kernel's own speed at writing cnngraph's arcs: Neo4j's core Java API, embedded, no Cypher,
 * no Bolt, no index look-ups (node handles kept in an array). It is the ceiling any loader on this
 * machine can reach for a layout, so bench_load.py prints the loader's rate beside it.
 *
 * <p>Usage: java -cp CLASSPATH:. KernelProbe ARCS_FILE CLASSES STORE_DIR [THREADS] [BATCH]
 *
 * <p>ARCS_FILE: int64 little-endian: number of nodes, number of arcs, then src[arcs], dst[arcs]
 * (written by bench_load.py). Weights are random: the speed does not depend on them. Prints one
 * line per layout: "layout=... relationships=... seconds=... class_arcs_per_second=...".
 */
public final class KernelProbe {
  private static final RelationshipType ARC = RelationshipType.withName("ARC");
  private static final Label POSITION = Label.label("Position");

  private KernelProbe() {}

  public static void main(String[] args) throws Exception {
    long[][] arcs = readArcs(Path.of(args[0]));
    int classes = Integer.parseInt(args[1]);
    Path store = Path.of(args[2]);
    int threads = args.length > 3 ? Integer.parseInt(args[3]) : 1;
    int batch = args.length > 4 ? Integer.parseInt(args[4]) : 5000;
    int nodes = (int) arcs[0][0];
    long[] src = arcs[1];
    long[] dst = arcs[2];
    DatabaseManagementService dbms =
        new DatabaseManagementServiceBuilder(store)
            .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.gibiBytes(1))
            .build();
    try {
      GraphDatabaseService db = dbms.database("neo4j");
      for (String layout : new String[] {"per-class", "compact"}) {
        String[] ids = createNodes(db, nodes);
        long started = System.nanoTime();
        writeArcs(db, ids, src, dst, classes, layout.equals("compact"), threads, batch);
        double seconds = (System.nanoTime() - started) / 1e9;
        long relationships = layout.equals("compact") ? src.length : (long) src.length * classes;
        System.out.printf(
            "layout=%s threads=%d relationships=%d seconds=%.2f class_arcs_per_second=%.0f%n",
            layout, threads, relationships, seconds, src.length * (double) classes / seconds);
        deleteAll(db);
      }
    } finally {
      dbms.shutdown();
    }
  }

  private static long[][] readArcs(Path file) throws IOException {
    byte[] bytes = Files.readAllBytes(file);
    ByteBuffer buffer = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
    long nodes = buffer.getLong();
    int count = (int) buffer.getLong();
    long[] src = new long[count];
    long[] dst = new long[count];
    for (int k = 0; k < count; k++) {
      src[k] = buffer.getLong();
    }
    for (int k = 0; k < count; k++) {
      dst[k] = buffer.getLong();
    }
    return new long[][] {{nodes}, src, dst};
  }

  /** Positions with their nid; returns their element ids (rebound in each writing transaction). */
  private static String[] createNodes(GraphDatabaseService db, int count) {
    String[] ids = new String[count];
    for (int start = 0; start < count; start += 20000) {
      try (Transaction tx = db.beginTx()) {
        for (int k = start; k < Math.min(count, start + 20000); k++) {
          Node node = tx.createNode(POSITION);
          node.setProperty("nid", (long) k);
          ids[k] = node.getElementId();
        }
        tx.commit();
      }
    }
    return ids;
  }

  private static void writeArcs(
      GraphDatabaseService db,
      String[] ids,
      long[] src,
      long[] dst,
      int classes,
      boolean compact,
      int threads,
      int batch)
      throws Exception {
    ExecutorService pool = Executors.newFixedThreadPool(threads);
    try {
      List<Future<?>> jobs = new ArrayList<>();
      for (int start = 0; start < src.length; start += batch) {
        final int from = start;
        final int to = Math.min(src.length, start + batch);
        jobs.add(pool.submit(() -> writeBatch(db, ids, src, dst, from, to, classes, compact)));
      }
      for (Future<?> job : jobs) {
        job.get();
      }
    } finally {
      pool.shutdown();
    }
  }

  private static void writeBatch(
      GraphDatabaseService db,
      String[] ids,
      long[] src,
      long[] dst,
      int from,
      int to,
      int classes,
      boolean compact) {
    Random random = new Random(from);
    for (int attempt = 0; ; attempt++) {
      try (Transaction tx = db.beginTx()) {
        for (int k = from; k < to; k++) {
          Node a = tx.getNodeByElementId(ids[(int) src[k]]);
          Node b = tx.getNodeByElementId(ids[(int) dst[k]]);
          if (compact) {
            double[] mean = new double[classes];
            double[] median = new double[classes];
            for (int h = 0; h < classes; h++) {
              mean[h] = random.nextDouble();
              median[h] = random.nextDouble();
            }
            Relationship r = a.createRelationshipTo(b, ARC);
            r.setProperty("mean", mean);
            r.setProperty("median", median);
          } else {
            for (int h = 0; h < classes; h++) {
              Relationship r = a.createRelationshipTo(b, ARC);
              r.setProperty("class", (long) h);
              r.setProperty("mean", random.nextDouble());
              r.setProperty("median", random.nextDouble());
            }
          }
        }
        tx.commit();
        return;
      } catch (TransientFailureException e) {
        if (attempt > 20) {
          throw e;
        }
      }
    }
  }

  private static void deleteAll(GraphDatabaseService db) {
    while (true) {
      try (Transaction tx = db.beginTx()) {
        var found = tx.execute("MATCH ()-[r:ARC]->() WITH r LIMIT 50000 DELETE r RETURN count(*) AS n");
        long n = (Long) found.next().get("n");
        tx.commit();
        if (n == 0) {
          break;
        }
      }
    }
    try (Transaction tx = db.beginTx()) {
      tx.execute("MATCH (p:Position) DELETE p");
      tx.commit();
    }
  }

}
