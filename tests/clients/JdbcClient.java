// The official ClickHouse JDBC driver (com.clickhouse:clickhouse-jdbc, as `make clients` fetches it)
// against `sluice warehouse`, with the default URL jdbc:clickhouse://host:port/ — the calls a GUI
// tool (DBeaver, DataGrip) makes on connecting, a SELECT, a PreparedStatement insert and select.
// Run by tests/test_warehouse_clients.py: java JdbcClient <url> <password> <table>. Prints one
// line per result, "name<TAB>value", for the test to read.
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class JdbcClient {
    static void print(String name, Object value) {
        System.out.println(name + "\t" + value);
    }

    static List<String> column(ResultSet rs, String name) throws SQLException {
        List<String> out = new ArrayList<>();
        try (rs) {
            while (rs.next()) {
                out.add(rs.getString(name));
            }
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        String table = args[2];
        Properties props = new Properties();
        props.setProperty("user", "sluice");
        props.setProperty("password", args[1]);
        try (Connection conn = DriverManager.getConnection(url, props)) {
            DatabaseMetaData meta = conn.getMetaData();
            print("driver", meta.getDriverName() + " " + meta.getDriverVersion());
            print("product", meta.getDatabaseProductName() + " " + meta.getDatabaseProductVersion());
            print("valid", conn.isValid(5));
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE " + table + " (id UInt32, name String, score Float64) ENGINE = MergeTree ORDER BY id");
            }
            print("catalogs", column(meta.getCatalogs(), "TABLE_CAT"));
            print("schemas", column(meta.getSchemas(), "TABLE_SCHEM"));
            print("tables", column(meta.getTables(null, null, table, null), "TABLE_NAME"));
            print("columns", column(meta.getColumns(null, null, table, null), "COLUMN_NAME"));
            print("types", column(meta.getColumns(null, null, table, null), "TYPE_NAME"));

            try (PreparedStatement ps = conn.prepareStatement("INSERT INTO " + table + " (id, name, score) VALUES (?, ?, ?)")) {
                for (int i = 1; i <= 3; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, i == 2 ? "it's" : "row " + i);
                    ps.setDouble(3, i * 1.5);
                    ps.addBatch();
                }
                int total = 0;
                for (int n : ps.executeBatch()) {
                    total += n;
                }
                print("batch", total);
            }
            try (PreparedStatement ps = conn.prepareStatement("INSERT INTO " + table + " VALUES (?, ?, ?)")) {
                ps.setInt(1, 4);
                ps.setString(2, "four");
                ps.setDouble(3, 6.0);
                print("single", ps.executeUpdate());
            }
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT count() FROM " + table)) {
                rs.next();
                print("count", rs.getLong(1));
            }
            try (PreparedStatement ps = conn.prepareStatement("SELECT name, score FROM " + table + " WHERE id = ?")) {
                ps.setInt(1, 2);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    print("selected", rs.getString("name") + "|" + rs.getDouble("score"));
                }
            }
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT number, toString(number) AS s FROM numbers(100000)")) {
                long sum = 0;
                int n = 0;
                while (rs.next()) {
                    sum += rs.getLong(1);
                    n++;
                }
                print("numbers", n + "|" + sum);
            }
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT * FROM no_such_table_here");
                print("error", "none");
            } catch (SQLException e) {
                print("error", e.getErrorCode() + "|" + e.getMessage().replace('\n', ' '));
            }
            try (Statement st = conn.createStatement()) {
                st.execute("DROP TABLE " + table);
            }
        }
    }
}
