using System.Buffers.Binary;
using System.Text;

namespace Kvq.Tests.Formats;

/// <summary>
/// Where each header field of a well-formed GGUF file sits (byte offsets), found by a walk independent of
/// <see cref="Kvq.Formats.Gguf.GgufFile"/>, so tests can corrupt one precise field.
/// </summary>
internal sealed class GgufLayout
{
    public sealed record Kv(string Key, long KeyLengthAt, long TypeAt, long ValueAt, uint Type);
    public sealed record TensorEntry(string Name, long NameLengthAt, long NDimsAt, long DimsAt, int NDims, long TypeAt, long OffsetAt);

    public List<Kv> Kvs { get; } = [];
    public List<TensorEntry> Tensors { get; } = [];
    /// <summary>First byte after the tensor table (before alignment padding).</summary>
    public long HeaderEnd { get; private set; }

    public static GgufLayout Read(byte[] b)
    {
        var l = new GgufLayout();
        long pos = 8;
        ulong nTensors = BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan((int)pos)); pos += 8;
        ulong nKv = BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan((int)pos)); pos += 8;
        for (ulong i = 0; i < nKv; i++)
        {
            long keyAt = pos;
            string key = ReadString(b, ref pos);
            long typeAt = pos;
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan((int)pos)); pos += 4;
            long valueAt = pos;
            SkipValue(b, ref pos, type);
            l.Kvs.Add(new Kv(key, keyAt, typeAt, valueAt, type));
        }
        for (ulong i = 0; i < nTensors; i++)
        {
            long nameAt = pos;
            string name = ReadString(b, ref pos);
            long nDimsAt = pos;
            int nDims = (int)BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan((int)pos)); pos += 4;
            long dimsAt = pos;
            pos += 8L * nDims;
            long typeAt = pos; pos += 4;
            long offsetAt = pos; pos += 8;
            l.Tensors.Add(new TensorEntry(name, nameAt, nDimsAt, dimsAt, nDims, typeAt, offsetAt));
        }
        l.HeaderEnd = pos;
        return l;
    }

    public Kv Key(string key) => Kvs.Single(k => k.Key == key);

    private static string ReadString(byte[] b, ref long pos)
    {
        int len = checked((int)BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan((int)pos)));
        var s = Encoding.UTF8.GetString(b, (int)pos + 8, len);
        pos += 8 + len;
        return s;
    }

    private static void SkipValue(byte[] b, ref long pos, uint type)
    {
        switch (type)
        {
            case 0 or 1 or 7: pos += 1; break;
            case 2 or 3: pos += 2; break;
            case 4 or 5 or 6: pos += 4; break;
            case 10 or 11 or 12: pos += 8; break;
            case 8: ReadString(b, ref pos); break;
            case 9:
            {
                uint et = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan((int)pos));
                long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan((int)pos + 4));
                pos += 12;
                for (long i = 0; i < n; i++) SkipValue(b, ref pos, et);
                break;
            }
            default: throw new InvalidDataException($"fixture has value type {type}");
        }
    }
}
