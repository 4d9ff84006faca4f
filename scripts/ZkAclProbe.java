// The e2e's look at the election's znodes under zookeeper.auth.enabled=true (step 7b of
// scripts/e2e-k8s.sh, which runs this file as a single-file program):
//   java -cp <ZooKeeper classpath> scripts/ZkAclProbe.java SERVER ELECTION_ROOT SUPER_PASSWORD
import java.util.List;
import java.util.concurrent.CountDownLatch;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.ACL;
import org.apache.zookeeper.data.Stat;

/** The e2e's look at the election's znodes: ACLs, and what an anonymous client and the super identity may do. */
public class ZkAclProbe {
    static ZooKeeper connect(String server) throws Exception {
        CountDownLatch up = new CountDownLatch(1);
        ZooKeeper zk = new ZooKeeper(server, 10000, e -> { if (e.getState() == org.apache.zookeeper.Watcher.Event.KeeperState.SyncConnected) up.countDown(); });
        up.await();
        return zk;
    }
    static String acl(List<ACL> acls) {
        StringBuilder b = new StringBuilder();
        for (ACL a : acls) {
            String p = "";
            int perms = a.getPerms();
            if ((perms & ZooDefs.Perms.CREATE) != 0) p += "c";
            if ((perms & ZooDefs.Perms.DELETE) != 0) p += "d";
            if ((perms & ZooDefs.Perms.READ) != 0) p += "r";
            if ((perms & ZooDefs.Perms.WRITE) != 0) p += "w";
            if ((perms & ZooDefs.Perms.ADMIN) != 0) p += "a";
            b.append(b.length() == 0 ? "" : " ").append(a.getId().getScheme()).append(':').append(a.getId().getId()).append('=').append(p);
        }
        return b.toString();
    }
    static String attempt(String what, Op op) {
        try { op.run(); return what + " ok"; }
        catch (KeeperException e) { return what + " " + e.code(); }
        catch (Exception e) { return what + " " + e; }
    }
    interface Op { void run() throws Exception; }
    public static void main(String[] args) throws Exception {
        String server = args[0], root = args[1], superPassword = args[2];
        String parent = root.substring(0, root.lastIndexOf('/'));
        String probe = root + "/e2e-super-probe";
        // A parent the replicas created above the root lets anyone add a
        // path of its own (another release), and nobody but super delete.
        String neighbour = parent + "/e2e-other-release";
        ZooKeeper anon = connect(server);
        // ZooKeeper shows a digest ACL's hash to the super identity only.
        ZooKeeper su = connect(server);
        su.addAuthInfo("digest", ("super:" + superPassword).getBytes());
        System.out.println("acl " + root + " " + acl(su.getACL(root, new Stat())));
        String candidate = null;
        for (String child : su.getChildren(root, false)) {
            System.out.println("acl " + root + "/" + child + " " + acl(su.getACL(root + "/" + child, new Stat())));
            if (child.startsWith("c_") && candidate == null) candidate = root + "/" + child;
        }
        String c = candidate;
        System.out.println(attempt("anonymous delete " + c, () -> anon.delete(c, -1)));
        if (anon.exists(root + "/fencing", false) != null) {
            System.out.println(attempt("anonymous setData " + root + "/fencing", () -> anon.setData(root + "/fencing", "0".getBytes(), -1)));
        }
        System.out.println(attempt("anonymous create " + probe, () -> anon.create(probe, new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT)));
        System.out.println(attempt("super create " + probe, () -> su.create(probe, new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT)));
        System.out.println(attempt("super delete " + probe, () -> su.delete(probe, -1)));
        System.out.println(attempt("anonymous create " + neighbour, () -> anon.create(neighbour, new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT)));
        System.out.println(attempt("anonymous delete " + root, () -> anon.delete(root, -1)));
        System.out.println(attempt("super delete " + neighbour, () -> su.delete(neighbour, -1)));
        anon.close();
        su.close();
    }
}
