import Glibc

/// The base directory of a batch (`-d DIR`) and the directories under it that destinations
/// name, created on demand without ever following a symbolic link below the base: a link
/// planted at `DIR/a` cannot send `a/b.bin` elsewhere.
///
/// Remaining window (documented): someone who can write inside DIR could swap a directory for
/// a link between this check and the file's creation; spate does not defend against a local
/// attacker racing it inside its own output directory.
final class BatchDirectory: @unchecked Sendable {
    let base: String
    /// The last directory prepared (files of one directory usually come together).
    private var lastPrepared: String?
    /// This run created `lastPrepared` (its `mkdir` succeeded): it was empty then, so a
    /// destination in it needs no look for an earlier run's file, partial file or journal.
    /// Only the last directory is remembered (memory stays flat however many there are); one
    /// seen again later is not new any more, and is looked into as usual.
    private var lastPreparedIsNew = false

    /// Where a destination goes.
    struct Prepared: Equatable {
        let path: String
        /// Its directory was created by this run, just now: nothing of an earlier run can be
        /// there (`BatchSkipCheck.Verdict.fetchNew` without a look).
        let inNewDirectory: Bool
    }

    /// Uses `base`, creating it (and its parents) if missing.
    init(base: String) throws(SpateError) {
        let trimmed = base.count > 1 && base.hasSuffix("/") ? String(base.dropLast()) : base
        self.base = trimmed.isEmpty ? "." : trimmed
        try Self.makeParents(self.base)
        guard FilePaths.isDirectory(self.base) else { throw .localIO("\(self.base) is not a directory") }
        guard access(self.base, W_OK | X_OK) == 0 else { throw .localIO("cannot write to directory \(self.base)") }
    }

    /// The path of `destination` (normalised, relative) under the base, after creating its
    /// directories. Throws when a component is a symbolic link or not a directory.
    func prepare(_ destination: String) throws(SpateError) -> Prepared {
        let path = base + "/" + destination
        guard let slash = destination.lastIndex(ofASCII: UInt8(ascii: "/")) else {  // bytes: see FilePaths.directory
            return Prepared(path: path, inNewDirectory: false)
        }
        let directory = String(destination[..<slash])
        if directory == lastPrepared { return Prepared(path: path, inNewDirectory: lastPreparedIsNew) }
        lastPrepared = nil
        var created = false
        var fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Syscall.fail("open", path: base) }
        defer { _ = close(fd) }
        var walked = base
        // Split on bytes, as the path was normalised (`BatchPath`): by Character, a "/" that
        // shares a grapheme with its neighbour (after U+0600, before a combining mark) would
        // not split, and a name with "/" inside would reach `openat` past `O_NOFOLLOW`.
        for component in directory.utf8.split(separator: UInt8(ascii: "/")) {
            let name = String(decoding: component, as: UTF8.self)
            walked += "/" + name
            created = mkdirat(fd, name, 0o777) == 0
            if !created && errno != EEXIST { throw Syscall.fail("create directory", path: walked) }
            let next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0 {
                let code = errno
                if code == ELOOP || code == ENOTDIR {
                    var info = stat()
                    if fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0, (info.st_mode & S_IFMT) == S_IFLNK {
                        throw .localIO("\(walked) is a symbolic link; spate never follows one below --dir")
                    }
                    throw .localIO("\(walked) exists and is not a directory")
                }
                throw Syscall.fail("open", path: walked, errno: code)
            }
            _ = close(fd)
            fd = next
        }
        lastPrepared = directory
        lastPreparedIsNew = created
        return Prepared(path: path, inNewDirectory: created)
    }

    /// `mkdir -p`.
    private static func makeParents(_ path: String) throws(SpateError) {
        if FilePaths.isDirectory(path) { return }
        var walked = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            walked += "/" + component
            if mkdir(walked, 0o777) != 0 && errno != EEXIST { throw Syscall.fail("create directory", path: walked) }
        }
    }
}
