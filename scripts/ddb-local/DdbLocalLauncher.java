// DynamoDB Local, embedded in-process, with test hooks on a loopback-only control port.
//
// Usage: java -Xmx512m -Djava.library.path=<dir>/DynamoDBLocal_lib \
//             -cp <dir>/DynamoDBLocal.jar:<launcher dir> DdbLocalLauncher <port> <controlPort>
//
// Starts DynamoDB Local (in memory, telemetry off) the way AWS's DynamoDB Streams Kinesis
// adapter tests embed it (ServerRunner.createServerFromCommandLineArgs + start()), then serves:
//
//   GET  /health                          -> 200 "ok"
//   GET  /namespaces                      -> the database namespaces created so far, one a line
//   POST /rollover?accessKey=K[&region=R] -> triggerShardRollovers() on K's database: every open
//                                            shard of every stream-enabled table is closed and
//                                            gets one child whose ParentShardId is the old shard
//   POST /dilate?accessKey=K&ms=N[&region=R]
//                                         -> dilateEventTimes(N) on K's database: every stream
//                                            event and shard is made N ms older (iterators older
//                                            than 15 min expire, data older than 24 h is trimmed,
//                                            shards older than the rollover age roll over)
//   POST /end-race?accessKey=K&ms=N[&region=R]
//                                         -> widen a race inside GetRecords on K's database:
//                                            DynamoDB Local reads a page's records, then asks
//                                            separately whether the shard is closed; a write and
//                                            a rollover in between give a page without its last
//                                            records and without a NextShardIterator. This
//                                            sleeps N ms between the two (0 turns it off), so a
//                                            test meets the race on every rollover, not once in
//                                            many. Done by wrapping the streams client's
//                                            LocalDBAccess in a proxy that pauses after
//                                            getStreamRecords.
//
// Namespaces: DynamoDB Local 3.x (LocalDynamoDBRequestHandler.getCredentialsString) keys its
// per-client databases, held in the private map `dbRequestHandlers`, by
// ACCESSKEY + "_" + REGION, both taken from the request's SigV4 Authorization header
// (Credential=ACCESSKEY/DATE/REGION/...). An access key that is not [A-Za-z0-9]+ is refused with
// UnrecognizedClientException. A namespace exists only after that client's first request; the
// hooks answer 404 for a namespace that does not exist (yet).
//
// The launcher prints "READY <port> <controlPort>" once both ports listen, and exits when its
// standard input reaches end of file, so a test process that dies never leaves a server behind.

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.reflect.Field;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;

import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public final class DdbLocalLauncher {
    private static final String DEFAULT_REGION = "us-east-1";

    // LocalDynamoDBRequestHandler: its synchronized getHandler() creates namespaces, so reads
    // of the map lock the same monitor.
    private static Object requestHandler;
    private static Map<String, Object> handlers;
    // The end-race delay of each namespace whose streams client was wrapped.
    private static final Map<String, AtomicLong> endRaceDelays = new ConcurrentHashMap<>();

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: DdbLocalLauncher <port> <controlPort>");
            System.exit(2);
        }
        String port = args[0];
        int controlPort = Integer.parseInt(args[1]);

        // Die with the parent: a reader of stdin that exits the JVM at end of file.
        Thread stdinWatch = new Thread(() -> {
            try {
                InputStream in = System.in;
                byte[] buf = new byte[256];
                while (in.read(buf) >= 0) {
                    // ignore input
                }
            } catch (IOException e) {
                // treat as end of file
            }
            Runtime.getRuntime().halt(0);
        }, "stdin-watch");
        stdinWatch.setDaemon(true);
        stdinWatch.start();

        DynamoDBProxyServer server = ServerRunner.createServerFromCommandLineArgs(
                new String[] {"-inMemory", "-port", port, "-disableTelemetry"});
        server.start();
        requestHandler = field(field(server, "serverHandler"), "primaryHandler");
        handlers = handlersOf(requestHandler);

        HttpServer control = HttpServer.create(
                new InetSocketAddress(InetAddress.getLoopbackAddress(), controlPort), 16);
        control.setExecutor(Executors.newFixedThreadPool(2));
        control.createContext("/health", ex -> reply(ex, 200, "ok\n"));
        control.createContext("/namespaces", ex -> {
            StringBuilder sb = new StringBuilder();
            synchronized (requestHandler) {
                for (String k : new TreeSet<>(handlers.keySet())) {
                    sb.append(k).append('\n');
                }
            }
            reply(ex, 200, sb.toString());
        });
        control.createContext("/rollover", ex -> hook(ex, "triggerShardRollovers", null));
        control.createContext("/dilate", ex -> {
            Map<String, String> q = query(ex);
            long ms;
            try {
                ms = Long.parseLong(q.getOrDefault("ms", ""));
            } catch (NumberFormatException e) {
                reply(ex, 400, "ms must be a number of milliseconds\n");
                return;
            }
            hook(ex, "dilateEventTimes", ms);
        });
        control.createContext("/end-race", DdbLocalLauncher::endRace);
        control.start();

        System.out.println("READY " + port + " " + controlPort);
        System.out.flush();
    }

    /** DynamoDBProxyServer.serverHandler.primaryHandler.dbRequestHandlers, by reflection. */
    @SuppressWarnings("unchecked")
    private static Map<String, Object> handlersOf(Object requestHandler) throws Exception {
        return (Map<String, Object>) field(requestHandler, "dbRequestHandlers");
    }

    private static Object field(Object target, String name) throws Exception {
        for (Class<?> c = target.getClass(); c != null; c = c.getSuperclass()) {
            try {
                Field f = c.getDeclaredField(name);
                f.setAccessible(true);
                return f.get(target);
            } catch (NoSuchFieldException e) {
                // look in the superclass
            }
        }
        throw new NoSuchFieldException(target.getClass().getName() + "." + name);
    }

    /**
     * The database of the request's namespace (accessKey and region), or null after answering
     * the error: not a POST, a bad access key, or a namespace that does not exist yet.
     */
    private static Object namespaceDb(HttpExchange ex) throws IOException {
        if (!"POST".equals(ex.getRequestMethod())) {
            reply(ex, 405, "use POST\n");
            return null;
        }
        Map<String, String> q = query(ex);
        String key = q.get("accessKey");
        if (key == null || !key.matches("[A-Za-z0-9]+")) {
            reply(ex, 400, "accessKey=[A-Za-z0-9]+ is required\n");
            return null;
        }
        String namespace = key + "_" + q.getOrDefault("region", DEFAULT_REGION);
        Object db;
        synchronized (requestHandler) {
            db = handlers.get(namespace);
        }
        if (db == null) {
            reply(ex, 404, "no database for namespace " + namespace
                    + " (it exists after the client's first request)\n");
        }
        return db;
    }

    private static void hook(HttpExchange ex, String method, Long arg) throws IOException {
        Object db = namespaceDb(ex);
        if (db == null) {
            return;
        }
        try {
            if (arg == null) {
                Method m = db.getClass().getMethod(method);
                m.invoke(db);
            } else {
                Method m = db.getClass().getMethod(method, long.class);
                m.invoke(db, arg.longValue());
            }
            reply(ex, 200, "ok\n");
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            reply(ex, 500, method + " failed: " + cause + "\n");
        } catch (Exception e) {
            reply(ex, 500, method + " failed: " + e + "\n");
        }
    }

    private static void endRace(HttpExchange ex) throws IOException {
        Map<String, String> q = query(ex);
        long ms;
        try {
            ms = Long.parseLong(q.getOrDefault("ms", ""));
        } catch (NumberFormatException e) {
            reply(ex, 400, "ms must be a number of milliseconds\n");
            return;
        }
        Object db = namespaceDb(ex);
        if (db == null) {
            return;
        }
        try {
            AtomicLong delay = endRaceDelays.computeIfAbsent(
                    q.get("accessKey") + "_" + q.getOrDefault("region", DEFAULT_REGION),
                    n -> new AtomicLong());
            Object streams = field(db, "dynamoDbStreamsClient");
            Object access = field(streams, "dbAccess");
            if (!Proxy.isProxyClass(access.getClass())) {
                Class<?> accessType = Class.forName(
                        "software.amazon.dynamodb.services.local.shared.access.LocalDBAccess");
                Object target = access;
                Object wrapped = Proxy.newProxyInstance(
                        accessType.getClassLoader(), new Class<?>[] {accessType},
                        (proxy, method, args) -> {
                            Object result;
                            try {
                                result = method.invoke(target, args);
                            } catch (InvocationTargetException e) {
                                throw e.getCause() != null ? e.getCause() : e;
                            }
                            long pause = delay.get();
                            if (pause > 0 && "getStreamRecords".equals(method.getName())) {
                                Thread.sleep(pause);
                            }
                            return result;
                        });
                setField(streams, "dbAccess", wrapped);
            }
            delay.set(ms);
            reply(ex, 200, "ok\n");
        } catch (Exception e) {
            reply(ex, 500, "end-race failed: " + e + "\n");
        }
    }

    private static void setField(Object target, String name, Object value) throws Exception {
        for (Class<?> c = target.getClass(); c != null; c = c.getSuperclass()) {
            try {
                Field f = c.getDeclaredField(name);
                f.setAccessible(true);
                f.set(target, value);
                return;
            } catch (NoSuchFieldException e) {
                // look in the superclass
            }
        }
        throw new NoSuchFieldException(target.getClass().getName() + "." + name);
    }

    private static Map<String, String> query(HttpExchange ex) {
        Map<String, String> out = new HashMap<>();
        String raw = ex.getRequestURI().getRawQuery();
        if (raw == null) {
            return out;
        }
        for (String pair : raw.split("&")) {
            int eq = pair.indexOf('=');
            if (eq > 0) {
                out.put(URLDecoder.decode(pair.substring(0, eq), StandardCharsets.UTF_8),
                        URLDecoder.decode(pair.substring(eq + 1), StandardCharsets.UTF_8));
            }
        }
        return out;
    }

    private static void reply(HttpExchange ex, int status, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        ex.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(bytes);
        }
    }

    private DdbLocalLauncher() {}
}
