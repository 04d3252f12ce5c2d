import toolkit

toolkit.Close("1008", "policy")  # E: arg-type  P: reportArgumentType
