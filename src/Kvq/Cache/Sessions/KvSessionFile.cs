using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Kvq.IO;

namespace Kvq.Cache.Sessions;

/// <summary>
/// The session file format, version 1 (little-endian):
/// <code>
/// "KVQSESS\0"                      8-byte magic
/// u32 version = 1
/// u64 body bytes                   (what follows, up to the checksum)
/// body:
///   str model id, str model description, str format id, str format description   (str = i32 byte length + UTF-8)
///   i32 layers, i32 kv heads, i32 head dim, i32 block tokens
///   i32 length; i32 token count; i32 token[count]
///   i32 vocab; f32 logits[vocab]
///   per layer: i64 n, u8 key block bytes[n] ((block, head, bytes)); i64 n, u8 value block bytes[n]
///   keys then values: i32 sealed[layers]; u8 staged; if staged, per layer: i32 count, i64 n, f16[n];
///                     u8 sink; if sink: i64 n, f16[n]
/// 32 bytes SHA-256 of everything above
/// </code>
/// Written atomically (<see cref="AtomicFile"/>), hashed as it streams out. Read in two passes over the file (checksum,
/// then content), so a multi-GB session is never held twice. Every refusal is a <see cref="KvSessionException"/>.
/// </summary>
public static class KvSessionFile
{
    public const int Version = 1;
    private static readonly byte[] Magic = "KVQSESS\0"u8.ToArray();
    private const int HeaderBytes = 8 + 4 + 8, HashBytes = 32, MaxString = 1 << 16;

    public static void Write(string path, KvSession session)
    {
        var kv = session.Kv;
        var id = session.Identity;
        var shape = id.Plan.Shape;
        // The body's length first, so a reader can tell a truncated file from a corrupted one.
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true)) WriteMeta(w, session);
        long body = ms.Length;
        for (int l = 0; l < shape.Layers; l++) body += 16 + kv.Keys[l].LongLength + kv.Values[l].LongLength;
        body += SideBytes(kv.KeyState) + SideBytes(kv.ValueState);
        AtomicFile.Write(path, f =>
        {
            using var hs = new HashingWriteStream(f);
            using (var w = new BinaryWriter(hs, Encoding.UTF8, leaveOpen: true))
            {
                w.Write(Magic);
                w.Write((uint)Version);
                w.Write(body);
                w.Write(ms.GetBuffer().AsSpan(0, (int)ms.Length));
                for (int l = 0; l < shape.Layers; l++)
                {
                    w.Write(kv.Keys[l].LongLength);
                    w.Write(kv.Keys[l]);
                    w.Write(kv.Values[l].LongLength);
                    w.Write(kv.Values[l]);
                }
                WriteSide(w, kv.KeyState);
                WriteSide(w, kv.ValueState);
            }
            f.Write(hs.HashAndReset());
        });
    }

    private static void WriteMeta(BinaryWriter w, KvSession s)
    {
        var id = s.Identity;
        var shape = id.Plan.Shape;
        Str(w, id.Model);
        Str(w, id.ModelDescription);
        Str(w, id.Format);
        Str(w, id.FormatDescription);
        w.Write(shape.Layers);
        w.Write(shape.KvHeads);
        w.Write(shape.HeadDim);
        w.Write(id.Plan.BlockTokens);
        w.Write(s.Kv.Length);
        w.Write(s.Kv.Tokens.Length);
        w.Write(MemoryMarshal.AsBytes(s.Kv.Tokens.AsSpan()));
        w.Write(s.Logits.Length);
        w.Write(MemoryMarshal.AsBytes(s.Logits.AsSpan()));
    }

    private static long SideBytes(SwappedKv.SideState s)
    {
        long n = 4L * s.Sealed.Length + 1 + 1;
        if (s.Staging != null) foreach (var st in s.Staging) n += 4 + 8 + 2L * st.Data.Length;
        if (s.Sink != null) n += 8 + 2L * s.Sink.Length;
        return n;
    }

    private static void WriteSide(BinaryWriter w, SwappedKv.SideState s)
    {
        w.Write(MemoryMarshal.AsBytes(s.Sealed.AsSpan()));
        w.Write((byte)(s.Staging != null ? 1 : 0));
        if (s.Staging != null)
            foreach (var (data, count) in s.Staging)
            {
                w.Write(count);
                w.Write(data.LongLength);
                w.Write(MemoryMarshal.AsBytes(data.AsSpan()));
            }
        w.Write((byte)(s.Sink != null ? 1 : 0));
        if (s.Sink != null)
        {
            w.Write(s.Sink.LongLength);
            w.Write(MemoryMarshal.AsBytes(s.Sink.AsSpan()));
        }
    }

    private static void Str(BinaryWriter w, string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        w.Write(b.Length);
        w.Write(b);
    }

    /// <summary>Reads a session saved for <paramref name="expected"/>'s model and format.</summary>
    public static KvSession Read(string path, KvSessionIdentity expected)
    {
        FileStream fs;
        try { fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KvSessionException(path, KvSessionError.Unreadable, e.Message);
        }
        using (fs)
        {
            long size = fs.Length;
            var header = new byte[HeaderBytes];
            int got = fs.ReadAtLeast(header, HeaderBytes, throwOnEndOfStream: false);
            if (got < Magic.Length || !header.AsSpan(0, Magic.Length).SequenceEqual(Magic))
                throw new KvSessionException(path, KvSessionError.NotASession, $"expected the magic 'KVQSESS' at offset 0 ({size} bytes)");
            if (got < HeaderBytes)
                throw new KvSessionException(path, KvSessionError.Truncated, $"{size} bytes, shorter than the {HeaderBytes}-byte header");
            uint version = BitConverter.ToUInt32(header, 8);
            if (version != Version)
                throw new KvSessionException(path, KvSessionError.UnsupportedVersion, $"version {version}, this build reads version {Version}");
            long body = BitConverter.ToInt64(header, 12);
            long expectedSize = HeaderBytes + body + HashBytes;
            if (body < 0 || size < expectedSize)
                throw new KvSessionException(path, KvSessionError.Truncated, $"{size} bytes, the header says {expectedSize}");
            if (size > expectedSize)
                throw new KvSessionException(path, KvSessionError.Malformed, $"{size} bytes, {size - expectedSize} more than the header's {expectedSize}");
            VerifyChecksum(path, fs, HeaderBytes + body);
            fs.Position = HeaderBytes;
            var r = new SessionReader(path, fs, HeaderBytes + body);
            return Parse(r, expected);
        }
    }

    private static void VerifyChecksum(string path, FileStream fs, long content)
    {
        fs.Position = 0;
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buf = new byte[1 << 20];
        long left = content;
        while (left > 0)
        {
            int n = fs.Read(buf, 0, (int)Math.Min(buf.Length, left));
            if (n <= 0) throw new KvSessionException(path, KvSessionError.Truncated, $"ended at offset {content - left}");
            h.AppendData(buf, 0, n);
            left -= n;
        }
        var stored = new byte[HashBytes];
        fs.ReadExactly(stored);
        var actual = h.GetHashAndReset();
        if (!actual.AsSpan().SequenceEqual(stored))
            throw new KvSessionException(path, KvSessionError.Checksum,
                $"SHA-256 of the first {content} bytes is {Convert.ToHexString(actual)[..16].ToLowerInvariant()}..., the file says " +
                $"{Convert.ToHexString(stored)[..16].ToLowerInvariant()}...");
    }

    private static KvSession Parse(SessionReader r, KvSessionIdentity expected)
    {
        string path = r.Path;
        string model = r.Str("model id"), modelDesc = r.Str("model description");
        string format = r.Str("format id"), formatDesc = r.Str("format description");
        if (model != expected.Model)
            throw new KvSessionException(path, KvSessionError.ModelMismatch, $"saved for {modelDesc} (id {model}); this model is {expected.ModelDescription} (id {expected.Model})");
        if (format != expected.Format)
            throw new KvSessionException(path, KvSessionError.FormatMismatch, $"saved as {formatDesc} (id {format}); this run uses {expected.FormatDescription} (id {expected.Format})");
        var plan = expected.Plan;
        var shape = plan.Shape;
        r.Expect("layers", shape.Layers);
        r.Expect("kv heads", shape.KvHeads);
        r.Expect("head dim", shape.HeadDim);
        r.Expect("block tokens", plan.BlockTokens);
        int length = r.Int("length", 0, int.MaxValue);
        r.Expect("token count", length);
        var tokens = r.Array<int>("tokens", length);
        int vocab = r.Int("vocab", 0, 1 << 26);   // 0: a cached prefix without logits (PromptCacheStore)
        var logits = r.Array<float>("logits", vocab);
        long blocks = plan.BlocksFor(length);
        var keys = new byte[shape.Layers][];
        var values = new byte[shape.Layers][];
        for (int l = 0; l < shape.Layers; l++)
        {
            keys[l] = r.BlockBytes($"layer {l} keys", blocks * shape.KvHeads * plan.Keys.BlockLayout(l).Total,
                plan.Keys.CodecOf(l).HasBlockOutliers ? blocks * shape.KvHeads : 0);
            values[l] = r.BlockBytes($"layer {l} values", blocks * shape.KvHeads * plan.Values.BlockLayout(l).Total,
                plan.Values.CodecOf(l).HasBlockOutliers ? blocks * shape.KvHeads : 0);
        }
        var keyState = ReadSide(r, "keys", plan.Keys.EncodesWholeBlocks, plan.Keys.StagingTokens, plan, length);
        var valueState = ReadSide(r, "values", plan.Values.EncodesWholeBlocks, plan.Values.StagingTokens, plan, length);
        r.End();
        var kv = new SwappedKv(tokens, length, keys, values, keyState, valueState);
        return new KvSession(expected, kv, logits);
    }

    private static SwappedKv.SideState ReadSide(SessionReader r, string side, bool staged, int stagingTokens, Layout.KvLayoutPlan plan, int length)
    {
        var shape = plan.Shape;
        var sealedCounts = r.Array<int>($"{side} sealed counts", shape.Layers);
        foreach (int c in sealedCounts)
            if (c < 0 || c > length || c % plan.BlockTokens != 0)
                throw new KvSessionException(r.Path, KvSessionError.Malformed, $"{side}: {c} sealed tokens of {length} (block {plan.BlockTokens})");
        r.Expect($"{side} staging flag", staged ? 1 : 0, 1);
        (Half[], int)[]? staging = null;
        if (staged)
        {
            staging = new (Half[], int)[shape.Layers];
            long n = (long)shape.KvHeads * stagingTokens * shape.HeadDim;
            for (int l = 0; l < shape.Layers; l++)
            {
                int count = r.Int($"{side} layer {l} staged tokens", 0, stagingTokens);
                r.Expect64($"{side} layer {l} staging elements", n);
                staging[l] = (r.Array<Half>($"{side} layer {l} staging", (int)n), count);
            }
        }
        r.Expect($"{side} sink flag", plan.SinkTokens > 0 ? 1 : 0, 1);
        Half[]? sink = null;
        if (plan.SinkTokens > 0)
        {
            long n = (long)shape.Layers * shape.KvHeads * plan.SinkTokens * shape.HeadDim;
            r.Expect64($"{side} sink elements", n);
            sink = r.Array<Half>($"{side} sink", (int)n);
        }
        return new SwappedKv.SideState(sealedCounts, staging, sink);
    }

    /// <summary>Bounds-checked reads of the body, naming the item and offset of anything that does not fit.</summary>
    private sealed class SessionReader(string path, Stream s, long end)
    {
        public string Path => path;

        private KvSessionException Bad(string item, string detail) =>
            new(path, KvSessionError.Malformed, $"{item} at offset {s.Position}: {detail}");

        private void Need(string item, long bytes)
        {
            if (bytes < 0 || s.Position + bytes > end) throw Bad(item, $"needs {bytes} bytes, {end - s.Position} left");
        }

        public int Int(string item, int min, int max)
        {
            Need(item, 4);
            Span<byte> b = stackalloc byte[4];
            s.ReadExactly(b);
            int v = BitConverter.ToInt32(b);
            if (v < min || v > max) throw Bad(item, $"{v} is outside {min}..{max}");
            return v;
        }

        public void Expect(string item, int expected, int bytes = 4)
        {
            Need(item, bytes);
            Span<byte> b = stackalloc byte[4];
            b.Clear();
            s.ReadExactly(b[..bytes]);
            int v = BitConverter.ToInt32(b);
            if (v != expected) throw Bad(item, $"expected {expected}, found {v}");
        }

        public void Expect64(string item, long expected)
        {
            Need(item, 8);
            Span<byte> b = stackalloc byte[8];
            s.ReadExactly(b);
            long v = BitConverter.ToInt64(b);
            if (v != expected) throw Bad(item, $"expected {expected}, found {v}");
        }

        public string Str(string item)
        {
            int n = Int(item + " length", 0, MaxString);
            Need(item, n);
            var b = new byte[n];
            s.ReadExactly(b);
            return Encoding.UTF8.GetString(b);
        }

        public T[] Array<T>(string item, int count) where T : unmanaged
        {
            Need(item, (long)count * Marshal.SizeOf<T>());
            var a = new T[count];
            s.ReadExactly(MemoryMarshal.AsBytes(a.AsSpan()));
            return a;
        }

        /// <summary>A layer's blocks as <see cref="Storage.BlockArena.CopyOut"/> wrote them: <paramref name="dense"/> bytes,
        /// then for a format with sparse rows beside its blocks, <paramref name="sparseEntries"/> (i32 length, rows) entries,
        /// each length checked to stay inside the item.</summary>
        public byte[] BlockBytes(string item, long dense, long sparseEntries)
        {
            if (sparseEntries == 0) return Bytes(item, dense);
            Need(item + " size", 8);
            Span<byte> b = stackalloc byte[8];
            s.ReadExactly(b);
            long size = BitConverter.ToInt64(b);
            long least = dense + 4 * sparseEntries;
            if (size < least || size > int.MaxValue) throw Bad(item + " size", $"{size} is outside {least}..{int.MaxValue}");
            Need(item, size);
            var a = new byte[size];
            s.ReadExactly(a);
            if (Storage.SparseRows.Check(a, (int)dense, sparseEntries) is { } wrong) throw Bad(item, wrong);
            return a;
        }

        public byte[] Bytes(string item, long expected)
        {
            Expect64(item + " size", expected);
            Need(item, expected);
            var a = new byte[expected];
            s.ReadExactly(a);
            return a;
        }

        public void End()
        {
            if (s.Position != end) throw Bad("end of body", $"{end - s.Position} bytes left over");
        }
    }
}
