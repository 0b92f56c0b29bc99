using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Kvq.Tensors.Quant;

namespace Kvq.Tests.Formats.Safetensors;

/// <summary>A tensor to write: raw little-endian bytes of <paramref name="DType"/>, row-major.</summary>
internal sealed record TestTensor(string Name, string DType, long[] Shape, byte[] Data)
{
    public static TestTensor FromFloats(string name, string dtype, long[] shape, float[] values) =>
        new(name, dtype, shape, SafetensorsTestWriter.Encode(dtype, values));
}

/// <summary>Writes .safetensors files for tests (the format: u64 header length, JSON header, data).</summary>
internal static class SafetensorsTestWriter
{
    /// <summary>
    /// Writes the tensors back to back in the given order. <paramref name="patchHeader"/> may rewrite the JSON text
    /// (for malformed-input tests); the header is space-padded to a multiple of 8 bytes as the reference writer does.
    /// </summary>
    public static void Write(string path, IEnumerable<TestTensor> tensors, IDictionary<string, string>? metadata = null,
        Func<string, string>? patchHeader = null)
    {
        var list = tensors.ToList();
        var sb = new StringBuilder("{");
        if (metadata != null) sb.Append("\"__metadata__\":").Append(JsonSerializer.Serialize(metadata)).Append(',');
        long at = 0;
        foreach (var t in list)
        {
            sb.Append(JsonSerializer.Serialize(t.Name)).Append(":{\"dtype\":\"").Append(t.DType).Append("\",\"shape\":[")
                .Append(string.Join(",", t.Shape)).Append("],\"data_offsets\":[").Append(at).Append(',').Append(at + t.Data.Length).Append("]},");
            at += t.Data.Length;
        }
        if (sb[^1] == ',') sb.Length--;
        sb.Append('}');
        string header = patchHeader?.Invoke(sb.ToString()) ?? sb.ToString();
        var headerBytes = Encoding.UTF8.GetBytes(header);
        int padded = (headerBytes.Length + 7) / 8 * 8;
        using var fs = File.Create(path);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
        fs.Write(len);
        fs.Write(headerBytes);
        for (int i = headerBytes.Length; i < padded; i++) fs.WriteByte((byte)' ');
        foreach (var t in list) fs.Write(t.Data);
    }

    public static byte[] Encode(string dtype, float[] values)
    {
        switch (dtype)
        {
            case "F32":
                return MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
            case "F16":
            {
                var h = new ushort[values.Length];
                for (int i = 0; i < h.Length; i++) h[i] = BitConverter.HalfToUInt16Bits((Half)values[i]);
                return MemoryMarshal.AsBytes(h.AsSpan()).ToArray();
            }
            case "BF16":
            {
                var h = new ushort[values.Length];
                for (int i = 0; i < h.Length; i++) h[i] = Bf16.FromSingle(values[i]);
                return MemoryMarshal.AsBytes(h.AsSpan()).ToArray();
            }
            default: throw new ArgumentException(dtype);
        }
    }

    /// <summary>The values as they read back after encoding to <paramref name="dtype"/> (what the loader must return).</summary>
    public static float[] RoundTrip(string dtype, float[] values)
    {
        var bytes = Encode(dtype, values);
        var r = new float[values.Length];
        for (int i = 0; i < r.Length; i++)
        {
            r[i] = dtype switch
            {
                "F32" => BitConverter.ToSingle(bytes, i * 4),
                "F16" => (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(bytes, i * 2)),
                _ => BitConverter.UInt32BitsToSingle((uint)BitConverter.ToUInt16(bytes, i * 2) << 16),
            };
        }
        return r;
    }
}
