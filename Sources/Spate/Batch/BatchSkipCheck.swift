import Glibc

/// What a batch does with one destination before fetching it: a rerun skips files that are
/// complete, resumes partial ones (the engine's journal), and refuses to replace a file it
/// cannot vouch for.
enum BatchSkipCheck {
    enum Verdict: Equatable {
        /// Nothing is there but maybe a partial file without a journal (a leftover), or
        /// `--force`: download.
        case fetch
        /// Nothing at all is there — no file, no partial file, no journal: download, and a
        /// small file needs no partial file (`OutputFile(unnamedFor:)`).
        case fetchNew
        /// A journal is there: download, resuming what it records.
        case resume
        /// The file is complete: spate saved it from this URL, with this size (and checksum);
        /// `note` says why it is trusted when that is weaker (no extended attributes).
        case complete(bytes: Int64, note: String?)
        /// Something is there that spate will not replace without `--force`.
        case refuse(String)
    }

    /// Judges `path` for `url` (`.resume` may still find the journal unusable: the engine
    /// decides). Also removes leftovers no resume can use: a partial file that
    /// is the complete file's other name (killed between link and unlink), a journal of a
    /// complete file, and a partial file without a journal.
    static func check(path: String, url: RemoteURL, checksum: Checksum?, overwrite: Bool) -> Verdict {
        let part = OutputFile.partPath(for: path)
        let journal = Journal.path(for: path)
        var info = stat()
        guard lstat(path, &info) == 0 else {
            // A journal means a partial download to resume. (A partial file without one is a
            // leftover the engine replaces: `DownloadOptions.replacesUnjournaledPartial`.)
            if FilePaths.exists(journal) { return .resume }
            return FilePaths.exists(part) ? .fetch : .fetchNew
        }
        if overwrite { return .fetch }
        let notSpates = "\(path) already exists and spate did not save it from this URL; use --force to replace it"
        guard (info.st_mode & S_IFMT) == S_IFREG else { return .refuse(notSpates) }
        var note: String?
        switch SavedMark.lookup(path: path) {
        case .marked(let mark):
            guard mark == SavedMark(size: mark.size, url: url) else { return .refuse(notSpates) }
            guard Int64(info.st_size) == mark.size else {
                return .refuse("\(path) was saved by spate from this URL with \(mark.size) bytes and now has \(info.st_size) bytes: changed since; use --force to fetch it again")
            }
        case .unmarked:
            return .refuse(notSpates)
        case .unsupported:
            // Nothing on this file system says who wrote the file: trust its name (never
            // replacing it loses nothing), and the checksum when there is one.
            note = checksum == nil
                ? "already there; kept as complete without a check (this file system keeps no extended attributes, so spate cannot tell it saved the file)"
                : "already there; its checksum matches (this file system keeps no extended attributes)"
        }
        if let checksum {
            guard let actual = digest(of: path, algorithm: checksum.algorithm), actual == checksum.digest else {
                return .refuse("\(path) already exists but does not match its checksum; use --force to fetch it again")
            }
        }
        var partInfo = stat()
        if lstat(part, &partInfo) == 0, partInfo.st_ino == info.st_ino, partInfo.st_dev == info.st_dev { _ = unlink(part) }
        if !FilePaths.exists(part) { _ = unlink(journal) }
        return .complete(bytes: Int64(info.st_size), note: note)
    }

    /// The digest of the file at `path`, read in 1 MiB blocks; nil when it cannot be read.
    static func digest(of path: String, algorithm: DigestAlgorithm) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = close(fd) }
        let digest = Digest(algorithm)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while true {
            let n = Syscall.preadFully(fd, buffer, at: offset)
            if n < 0 { return nil }
            if n == 0 { break }
            digest.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += Int64(n)
        }
        return digest.finalize()
    }
}
