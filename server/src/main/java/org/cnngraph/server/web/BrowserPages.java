package org.cnngraph.server.web;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.util.regex.Pattern;
import javax.ws.rs.GET;
import javax.ws.rs.PathParam;
import javax.ws.rs.core.Response;

/**
 * Pages for Neo4j Browser, served under /cnngraph by the embedded server (an unmanaged extension,
 * mounted by the launcher's server.unmanaged_extension_classes).
 *
 * <ul>
 *   <li>GET /cnngraph/browser: a page that turns Browser's "Connect result nodes" off (its
 *       autoComplete setting, kept in this origin's localStorage) and opens /browser/ with the same
 *       query string, so that no settings frame follows the login.
 *   <li>GET /cnngraph/guides/NAME: a guide (NAME.html, for ':play URL') or a style sheet
 *       (NAME.grass, for ':style URL') that 'cnngraph browse' wrote into the guides folder. Names are
 *       letters, digits, '-' and '_' only; nothing else is served.
 * </ul>
 *
 * <p>Browser fetches these without credentials, so the launcher adds /cnngraph/.* to the HTTP auth
 * allow-list; 'cnngraph browse' names each guide by a digest keyed with the server's password, so
 * that a guide's address cannot be guessed from a model's name.
 */
@javax.ws.rs.Path("/")
public final class BrowserPages {

  private static final Pattern NAME = Pattern.compile("[A-Za-z0-9_-]{1,80}\\.(html|grass)");
  private static volatile Path guides;

  /** Sets the folder whose guides and style sheets are served (called by the launcher). */
  public static void serveFrom(Path folder) {
    guides = folder;
  }

  private static final String OPEN =
      "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Neo4j Browser for cnngraph</title>\n"
          + "<script>\n"
          + "try {\n"
          + "  var key = 'neo4j.settings';\n"
          + "  var settings = JSON.parse(localStorage.getItem(key) || '{}') || {};\n"
          + "  settings.autoComplete = false;\n"
          + "  localStorage.setItem(key, JSON.stringify(settings));\n"
          + "} catch (e) {}\n"
          + "location.replace('/browser/' + location.search + location.hash);\n"
          + "</script></head>\n"
          + "<body><p>Opening <a href=\"/browser/\">Neo4j Browser</a>...</p></body></html>\n";

  @GET
  @javax.ws.rs.Path("browser")
  public Response open() {
    return Response.ok(OPEN, "text/html; charset=utf-8").header("Cache-Control", "no-store").build();
  }

  @GET
  @javax.ws.rs.Path("guides/{name}")
  public Response guide(@PathParam("name") String name) {
    Path folder = guides;
    if (folder == null || !NAME.matcher(name).matches()) {
      return Response.status(Response.Status.NOT_FOUND).build();
    }
    Path file = folder.resolve(name);
    try {
      if (!Files.isRegularFile(file, LinkOption.NOFOLLOW_LINKS)) {
        return Response.status(Response.Status.NOT_FOUND).build();
      }
      String type = name.endsWith(".html") ? "text/html" : "text/plain";
      return Response.ok(Files.readAllBytes(file), type + "; charset=utf-8")
          .header("Cache-Control", "no-store")
          .header("X-Content-Type-Options", "nosniff")
          .build();
    } catch (IOException e) {
      return Response.status(Response.Status.NOT_FOUND).build();
    }
  }
}
