"""Operations on a published archive: audit, status, coverage and requeue."""
