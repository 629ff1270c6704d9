from tests.conftest import s3_client


def test_seaweed_stores_and_returns_an_object(s3_server, s3_bucket):
    client = s3_client(s3_server)
    client.put_object(Bucket=s3_bucket, Key="x/y.bin", Body=b"abc")
    assert client.get_object(Bucket=s3_bucket, Key="x/y.bin")["Body"].read() == b"abc"
